"""The synthetic world's fixed facts: calendar, vocabularies' weights, the category tree, countries, junk.

The vocabularies themselves (event types, traffic sources, payment methods, device types) are the input
contract's (`jobs.contract.schema`); the weights here follow their order.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from jobs.contract.schema import EVENT_TYPES, TRAFFIC_SOURCES

START = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
START_US = int(START.timestamp()) * 1_000_000
DAY = 86_400.0
MAX_SLOTS = 5  # partners per person
MAX_DEVICES = 3

# event type codes: positions in the contract's EVENT_TYPES
PAGE_VIEW = EVENT_TYPES.index("page_view")
PRODUCT_VIEW = EVENT_TYPES.index("product_view")
ADD_TO_CART = EVENT_TYPES.index("add_to_cart")
PURCHASE = EVENT_TYPES.index("purchase")
LOGIN = EVENT_TYPES.index("login")
SUBSCRIBE = EVENT_TYPES.index("subscribe")
MESSAGE_SENT = EVENT_TYPES.index("message_sent")
MESSAGE_CLICK = EVENT_TYPES.index("message_click")
# traffic of web sessions (TRAFFIC_SOURCES order); campaigns bring their channel's traffic
WEB_TRAFFIC_W = np.array([0.36, 0.30, 0.12, 0.14, 0, 0, 0, 0.08])
CHANNEL_TRAFFIC = np.array([TRAFFIC_SOURCES.index(channel) for channel in ("email", "sms", "viber")])
PAYMENT_W = np.array([0.45, 0.3, 0.07, 0.06, 0.12])  # PAYMENT_METHODS order

CATALOG: dict[str, tuple[dict[str, tuple[float, float]], list[str]]] = {
    "electronics": (
        {"phones": (420, 3), "laptops": (850, 2), "tv": (560, 1), "audio": (110, 2), "accessories": (22, 3)},
        ["Samsung", "Apple", "Xiaomi", "Lenovo", "Sony", "LG", "HP", "Asus"],
    ),
    "fashion": (
        {"women": (45, 3), "men": (42, 2), "shoes": (75, 3), "bags": (55, 1), "kids": (25, 1)},
        ["Zara", "H&M", "Mango", "Reserved", "Nike", "Adidas", "Puma", "LC Waikiki"],
    ),
    "home": (
        {"kitchen": (55, 3), "furniture": (260, 2), "decor": (28, 2), "bedding": (45, 2), "appliances": (180, 2)},
        ["IKEA", "Tefal", "Bosch", "Philips", "JYSK", "Zwilling", "Rowenta"],
    ),
    "beauty": (
        {"skincare": (24, 3), "makeup": (18, 2), "fragrance": (65, 2), "hair": (14, 2)},
        ["L'Oreal", "Nivea", "Maybelline", "Garnier", "Vichy", "La Roche-Posay", "Dior"],
    ),
    "sports": (
        {"fitness": (40, 2), "running": (85, 2), "cycling": (320, 1), "outdoor": (70, 2)},
        ["Nike", "Adidas", "Decathlon", "Salomon", "Garmin", "Under Armour"],
    ),
    "books": (
        {"fiction": (14, 3), "children": (11, 2), "business": (19, 1), "cookbooks": (22, 1)},
        ["Penguin", "HarperCollins", "Ciela", "Egmont", "Bard", "Helikon"],
    ),
    "toys": (
        {"lego": (48, 2), "dolls": (25, 2), "board_games": (30, 2), "baby": (35, 2)},
        ["LEGO", "Mattel", "Hasbro", "Ravensburger", "Chicco", "Fisher-Price"],
    ),
}
TOPS = list(CATALOG)
TOP_INDEX = {t: i for i, t in enumerate(TOPS)}
LIFE_EVENT_TOPS = np.array([TOP_INDEX["home"], TOP_INDEX["toys"], TOP_INDEX["sports"]])
LIFE_EVENT_W = np.array([0.6, 0.2, 0.2])

COUNTRIES = {
    # code: (weight, calling code, trunk prefix, [(city, weight)], mobile prefixes [(prefix, digits after)],
    #        email domains [(domain, weight)], first names, last names)
    "BG": (
        0.40,
        "359",
        "0",
        [("Sofia", 5), ("Plovdiv", 2), ("Varna", 2), ("Burgas", 1), ("Ruse", 1)],
        [("87", 7), ("88", 7), ("89", 7), ("98", 7)],
        [("gmail.com", 55), ("abv.bg", 25), ("yahoo.com", 10), ("outlook.com", 10)],
        [
            "ivan",
            "georgi",
            "dimitar",
            "maria",
            "elena",
            "nikolay",
            "petya",
            "stoyan",
            "desislava",
            "yordan",
            "teodora",
            "kalin",
            "radoslava",
            "martin",
            "viktoria",
        ],
        [
            "petrov",
            "ivanova",
            "georgiev",
            "dimitrova",
            "nikolov",
            "stoyanova",
            "todorov",
            "angelova",
            "kolev",
            "marinova",
            "hristov",
            "popova",
            "yordanov",
            "vasileva",
        ],
    ),
    "RO": (
        0.20,
        "40",
        "0",
        [("Bucharest", 5), ("Cluj-Napoca", 2), ("Timisoara", 2), ("Iasi", 2)],
        [("72", 7), ("74", 7), ("75", 7), ("76", 7)],
        [("gmail.com", 55), ("yahoo.com", 25), ("outlook.com", 10), ("hotmail.com", 10)],
        [
            "andrei",
            "ioana",
            "mihai",
            "elena",
            "alexandru",
            "andreea",
            "cristian",
            "mihaela",
            "florin",
            "diana",
            "razvan",
            "bianca",
            "stefan",
            "roxana",
        ],
        [
            "popescu",
            "ionescu",
            "popa",
            "dumitru",
            "stan",
            "stoica",
            "gheorghe",
            "matei",
            "ciobanu",
            "rusu",
            "munteanu",
            "constantin",
        ],
    ),
    "GR": (
        0.15,
        "30",
        "",
        [("Athens", 5), ("Thessaloniki", 2), ("Patras", 1), ("Heraklion", 1)],
        [("690", 7), ("693", 7), ("694", 7), ("695", 7), ("697", 7), ("698", 7), ("699", 7)],
        [("gmail.com", 60), ("yahoo.gr", 15), ("hotmail.com", 15), ("otenet.gr", 10)],
        [
            "giorgos",
            "maria",
            "nikos",
            "eleni",
            "kostas",
            "katerina",
            "dimitris",
            "sofia",
            "yannis",
            "despina",
            "panagiotis",
            "vasiliki",
        ],
        [
            "papadopoulos",
            "papadaki",
            "nikolaou",
            "georgiou",
            "oikonomou",
            "karagiannis",
            "vlachou",
            "pappas",
            "makri",
            "antoniou",
        ],
    ),
    "DE": (
        0.10,
        "49",
        "0",
        [("Berlin", 4), ("Munich", 3), ("Hamburg", 3), ("Cologne", 2)],
        [
            ("151", 8),
            ("152", 8),
            ("157", 8),
            ("160", 7),
            ("170", 7),
            ("171", 7),
            ("172", 7),
            ("175", 7),
            ("176", 8),
            ("177", 8),
            ("178", 8),
            ("179", 8),
        ],
        [("gmail.com", 35), ("gmx.de", 25), ("web.de", 25), ("t-online.de", 15)],
        [
            "lukas",
            "anna",
            "maximilian",
            "lena",
            "felix",
            "laura",
            "jonas",
            "julia",
            "paul",
            "sarah",
            "leon",
            "katharina",
        ],
        ["mueller", "schmidt", "schneider", "fischer", "weber", "meyer", "wagner", "becker", "hoffmann", "schulz"],
    ),
    "PL": (
        0.15,
        "48",
        "",
        [("Warsaw", 5), ("Krakow", 3), ("Wroclaw", 2), ("Gdansk", 2), ("Poznan", 2)],
        [
            ("50", 7),
            ("51", 7),
            ("53", 7),
            ("57", 7),
            ("60", 7),
            ("66", 7),
            ("69", 7),
            ("72", 7),
            ("73", 7),
            ("78", 7),
            ("79", 7),
            ("88", 7),
        ],
        [("gmail.com", 45), ("wp.pl", 25), ("onet.pl", 20), ("o2.pl", 10)],
        [
            "jakub",
            "anna",
            "kacper",
            "zuzanna",
            "piotr",
            "katarzyna",
            "tomasz",
            "agnieszka",
            "michal",
            "magdalena",
            "pawel",
            "aleksandra",
        ],
        [
            "nowak",
            "kowalski",
            "wisniewska",
            "wojcik",
            "kowalczyk",
            "kaminski",
            "lewandowska",
            "zielinski",
            "szymanska",
            "wozniak",
        ],
    ),
}
COUNTRY_CODES = list(COUNTRIES)

JUNK_EMAILS = [
    "test@test.com",
    "Test@test.com",
    "noemail@gmail.com",
    "a@a.com",
    "asd@asd.com",
    "no@email.com",
    "none@none.com",
    "email@email.com",
    "test@example.com",
    "x@x.com",
    "nomail@abv.bg",
]
JUNK_EMAIL_W = np.array([20, 6, 14, 10, 8, 8, 5, 5, 6, 9, 9], dtype=float)
JUNK_PHONES = ["0000000000", "1111111111", "1234567890", "0123456789", "9999999999", "0888888888", "0000000"]
JUNK_PHONE_W = np.array([25, 10, 15, 10, 8, 22, 10], dtype=float)
EMAIL_VARIANT_W = np.array([0.60, 0.08, 0.07, 0.08, 0.08, 0.05, 0.04])  # see identifiers.email_variants
PHONE_VARIANT_W = np.array([0.22, 0.12, 0.12, 0.18, 0.14, 0.08, 0.07, 0.07])  # see identifiers.phone_variants
N_EMAIL_VARIANTS = len(EMAIL_VARIANT_W)
N_PHONE_VARIANTS = len(PHONE_VARIANT_W)
