"""Small fact tables the offline generators draw on: words, names, capitals, units, items.

Written by hand for this project and checked by eye; every generated answer is derived from these
tables (or computed), so an answer is right whenever its table row is.
"""

from __future__ import annotations

# Common English words, 2 to 13 letters, with the famous spelling traps (strawberry, mississippi).
WORDS: tuple[str, ...] = tuple(
    """
    an at be by do go he if in is it me my no of on or so to up us we
    act add age air all and ant any ape arm art ask bag bat bed bee big box boy bus cab can cap car cat cow cup
    cut day dog dot dry ear egg elf end eye fan far fig fit fix fly fox fun gas gum hat hen hot ice ink jam jar
    jet joy key kid kit lab leg lid log map mat mix mud net new nut oak odd oil old owl pan pen pet pig pin pot
    red rug run sad sea sky sun tea ten toe top toy tub two van war wax web wet win yes zoo
    able acid aunt baby bake ball band bank barn bear bell bird blue boat bone book boot cake calm card cart
    city clay coat code cold cook corn desk dish door duck dust easy fact farm fast fire fish flag food foot
    fork frog game gift girl goat gold good hand hill home hope horn idea iron jazz kite king lake lamp leaf
    lion love mail milk moon nest nose note open park path pear pink plan rain road rock roof rose ruby sail
    salt sand seed ship shoe sing snow soap sock song star swim tree wind wolf yard zero
    apple beach berry bread brick brush chair chalk cheek chess cloud clock coral crane dance dream eagle earth
    fence field flame flute frost fruit ghost glass grape grass heart honey horse house juice knife lemon light
    mango maple melon money mouse music ocean olive onion otter paint paper party peach pearl piano pizza plant
    queen quiet radio river robot salad sheep shell skill smile snake spoon storm sugar table tiger toast tooth
    train truck water whale wheat world zebra
    almond anchor animal banana basket bottle branch breeze bridge butter button camera candle carrot castle
    cherry circle coffee cookie copper cotton donkey dragon farmer flower forest garden ginger guitar hammer
    island jacket jungle kitten ladder lizard marble meadow mirror monkey orange parrot pencil pepper pillow
    planet pocket potato puzzle rabbit rocket saddle silver spider spring summer tomato turtle violin walnut
    window winter yellow
    balloon bicycle blanket cabbage captain chicken cabinet country diamond dolphin general giraffe harvest
    kitchen lantern library mineral morning octopus pancake panther penguin picture popcorn rainbow sandwich
    science teacher thunder tornado trumpet unicorn volcano weather
    airplane alphabet avocado blueberry bookcase building calendar chemical children chipmunk chocolate
    computer dinosaur elephant envelope exercise football freedom hospital kangaroo keyboard language
    mountain mushroom notebook pineapple question sunlight sunshine triangle umbrella vacation necklace
    adventure astronaut beautiful butterfly crocodile education fireplace happiness hurricane important
    raspberry spaghetti telephone tradition vegetable waterfall wonderful strawberry mississippi
    basketball television helicopter friendship generation restaurant temperature watermelon chimpanzee
    """.split()
)

NAMES: tuple[str, ...] = tuple(
    """
    Ada Amir Ana Ben Carla Chen Dan Diego Elena Emma Farah Felix Grace Hana Ivan Jade James Jin Kai Kofi Lara
    Leo Lucia Maya Mei Mia Nadia Noah Omar Priya Quinn Ravi Rosa Sam Sara Tariq Tom Uma Yuki Zoe
    """.split()
)

# (country, capital): countries whose capital is uncontested and unchanged in recent decades.
CAPITALS: tuple[tuple[str, str], ...] = (
    ("France", "Paris"),
    ("Germany", "Berlin"),
    ("Italy", "Rome"),
    ("Spain", "Madrid"),
    ("Portugal", "Lisbon"),
    ("the United Kingdom", "London"),
    ("Ireland", "Dublin"),
    ("the Netherlands", "Amsterdam"),
    ("Belgium", "Brussels"),
    ("Austria", "Vienna"),
    ("Poland", "Warsaw"),
    ("Hungary", "Budapest"),
    ("Greece", "Athens"),
    ("Sweden", "Stockholm"),
    ("Norway", "Oslo"),
    ("Denmark", "Copenhagen"),
    ("Finland", "Helsinki"),
    ("Iceland", "Reykjavik"),
    ("Russia", "Moscow"),
    ("Romania", "Bucharest"),
    ("Bulgaria", "Sofia"),
    ("Serbia", "Belgrade"),
    ("Croatia", "Zagreb"),
    ("Turkey", "Ankara"),
    ("Egypt", "Cairo"),
    ("Kenya", "Nairobi"),
    ("Nigeria", "Abuja"),
    ("Ghana", "Accra"),
    ("Morocco", "Rabat"),
    ("Ethiopia", "Addis Ababa"),
    ("Japan", "Tokyo"),
    ("China", "Beijing"),
    ("South Korea", "Seoul"),
    ("India", "New Delhi"),
    ("Pakistan", "Islamabad"),
    ("Bangladesh", "Dhaka"),
    ("Nepal", "Kathmandu"),
    ("Thailand", "Bangkok"),
    ("Vietnam", "Hanoi"),
    ("the Philippines", "Manila"),
    ("Malaysia", "Kuala Lumpur"),
    ("Mongolia", "Ulaanbaatar"),
    ("Saudi Arabia", "Riyadh"),
    ("Iran", "Tehran"),
    ("Iraq", "Baghdad"),
    ("Australia", "Canberra"),
    ("New Zealand", "Wellington"),
    ("Canada", "Ottawa"),
    ("the United States", "Washington, D.C."),
    ("Mexico", "Mexico City"),
    ("Cuba", "Havana"),
    ("Argentina", "Buenos Aires"),
    ("Chile", "Santiago"),
    ("Peru", "Lima"),
    ("Colombia", "Bogotá"),
    ("Venezuela", "Caracas"),
)

# (big unit, small unit, how many small units in one big unit)
UNITS: tuple[tuple[str, str, int], ...] = (
    ("kilometer", "meter", 1000),
    ("meter", "centimeter", 100),
    ("centimeter", "millimeter", 10),
    ("kilogram", "gram", 1000),
    ("liter", "milliliter", 1000),
    ("hour", "minute", 60),
    ("minute", "second", 60),
    ("day", "hour", 24),
    ("week", "day", 7),
    ("year", "month", 12),
    ("dozen", "item", 12),
    ("foot", "inch", 12),
)

# (singular, plural, lowest price, highest price) in whole dollars
ITEMS: tuple[tuple[str, str, int, int], ...] = (
    ("apple", "apples", 1, 3),
    ("notebook", "notebooks", 2, 6),
    ("pencil", "pencils", 1, 2),
    ("sandwich", "sandwiches", 4, 9),
    ("book", "books", 8, 25),
    ("shirt", "shirts", 10, 30),
    ("ticket", "tickets", 5, 40),
    ("toy car", "toy cars", 3, 12),
    ("cupcake", "cupcakes", 2, 5),
    ("flower pot", "flower pots", 4, 15),
    ("bag of rice", "bags of rice", 6, 18),
    ("pair of socks", "pairs of socks", 3, 8),
    ("bottle of juice", "bottles of juice", 2, 4),
    ("board game", "board games", 15, 45),
    ("lamp", "lamps", 12, 40),
    ("melon", "melons", 3, 7),
)

# (noun, plural) for things that get counted, shared and handed out
THINGS: tuple[tuple[str, str], ...] = (
    ("marble", "marbles"),
    ("sticker", "stickers"),
    ("cookie", "cookies"),
    ("stamp", "stamps"),
    ("seashell", "seashells"),
    ("candy", "candies"),
    ("card", "cards"),
    ("balloon", "balloons"),
    ("strawberry", "strawberries"),
    ("crayon", "crayons"),
    ("egg", "eggs"),
    ("book", "books"),
)
