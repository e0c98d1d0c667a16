"""The gRPC tokenizer service: encode, decode, render conversations, stream decode."""
