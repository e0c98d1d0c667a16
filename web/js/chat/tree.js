// A conversation with its alternatives: editing a user message forks the conversation there, and
// regenerating a reply adds a sibling reply; the old branches are kept and can be switched back
// to. Pure logic, no DOM.
//
// Stored form (the gateway keeps message objects as given and checks only role and content): the
// conversation's `messages` are the branch on screen, a plain chat any client can read and send
// back. A message with alternatives also carries
//   "alternatives": {"index": <its place among them>, "others": [<branch>, ...]}
// where each other branch is stored like `messages` itself: a list of messages, from that
// alternative down its own shown replies, whose later messages may carry alternatives in turn.
// Nesting grows only with forks inside hidden branches, not with a conversation's length (the
// gateway bounds a document's nesting depth, max_conversation_depth).

export class ConversationTree {
  constructor() {
    this.root = { children: [], selected: 0 };
  }

  /** Rebuild the tree from stored messages (plain chats, without alternatives, included). */
  static fromMessages(messages) {
    const tree = new ConversationTree();
    readBranch(tree.root, messages);
    return tree;
  }

  /** The stored form: the branch on screen, each forked message carrying its alternatives. */
  toMessages() {
    return writeBranch(this.root);
  }

  /** The messages on screen, first to last. */
  path() {
    const nodes = [];
    for (let node = this.root; node.children.length; ) {
      node = node.children[node.selected];
      nodes.push(node);
    }
    return nodes;
  }

  /** The conversation up to and including `node`, as the chat endpoint takes it. */
  historyTo(node) {
    const path = this.path();
    return path.slice(0, path.indexOf(node) + 1).map((n) => ({ role: n.role, content: forModel(n.content) }));
  }

  /** Add a message after the last one and show it. */
  append(role, content) {
    const path = this.path();
    return this.addChild(path.at(-1) ?? this.root, role, content);
  }

  /** A new alternative to `node` (an edited question, a regenerated reply), shown in its place. */
  fork(node, content) {
    return this.addChild(this.parentOf(node), node.role, content);
  }

  /** Take back a message that got no reply (a failed send or regeneration): show what was before. */
  remove(node, showInstead) {
    const parent = this.parentOf(node);
    parent.children.splice(parent.children.indexOf(node), 1);
    parent.selected = Math.max(0, parent.children.indexOf(showInstead));
  }

  /** {index, count} of `node` among its alternatives. */
  alternativesOf(node) {
    const parent = this.parentOf(node);
    return { index: parent.children.indexOf(node), count: parent.children.length };
  }

  /** Show the alternative `step` places from `node` (-1 previous, +1 next); returns it. */
  switchFrom(node, step) {
    const parent = this.parentOf(node);
    const index = parent.children.indexOf(node) + step;
    if (index < 0 || index >= parent.children.length) return node;
    parent.selected = index;
    return parent.children[index];
  }

  parentOf(node) {
    let parent = this.root;
    for (const n of this.path()) {
      if (n === node) return parent;
      parent = n;
    }
    throw new Error("that message is not on the branch shown");
  }

  addChild(parent, role, content) {
    const node = newNode(role, content);
    parent.children.push(node);
    parent.selected = parent.children.length - 1;
    return node;
  }
}

/** Content as the model reads it: parts keep only their type and text (not tool timings). */
export function forModel(content) {
  return typeof content === "string" ? content : content.map((p) => ({ type: p.type, text: p.text }));
}

// --- helpers ---------------------------------------------------------------------------------

// A node is a message (role, content, and toolRuns: the sandbox's reports of a reply's python
// runs, stored as the message's `tool_runs`) with its replies, one of them shown.
function newNode(role, content, toolRuns) {
  return { role, content, toolRuns, children: [], selected: 0 };
}

function stored(node) {
  return node.toolRuns ? { role: node.role, content: node.content, tool_runs: node.toolRuns } : { role: node.role, content: node.content };
}

function fromStored(message) {
  return newNode(message.role, message.content, Array.isArray(message.tool_runs) ? message.tool_runs : undefined);
}

/** The messages shown below `parent`, each with the alternatives beside it. */
function writeBranch(parent) {
  const out = [];
  for (let p = parent; p.children.length; p = p.children[p.selected]) {
    const node = p.children[p.selected];
    const message = stored(node);
    if (p.children.length > 1) {
      const others = p.children.filter((c) => c !== node).map((c) => [stored(c), ...writeBranch(c)]);
      message.alternatives = { index: p.selected, others };
    }
    out.push(message);
  }
  return out;
}

/** Hang `messages` (a stored branch) below `parent`, alternatives included. */
function readBranch(parent, messages) {
  for (const message of messages) {
    const node = fromStored(message);
    const alternatives = message.alternatives;
    const others = (Array.isArray(alternatives?.others) ? alternatives.others : [])
      .filter((branch) => Array.isArray(branch) && branch.length)
      .map(([first, ...rest]) => {
        const alternative = fromStored(first);
        readBranch(alternative, rest);
        return alternative;
      });
    const index = Math.min(Math.max(0, Math.trunc(Number(alternatives?.index)) || 0), others.length);
    others.splice(index, 0, node);
    parent.children = others;
    parent.selected = index;
    parent = node;
  }
}
