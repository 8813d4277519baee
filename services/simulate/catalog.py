"""Static vocabulary of the simulator: company names, people, features, ticket subjects, texts."""

from __future__ import annotations

COMPANY_FIRST = (
    "Acme", "Northwind", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Wonka", "Cyberdyne", "Tyrell",
    "Aperture", "Hooli", "Pied Piper", "Vandelay", "Soylent", "Massive", "Blue Sun", "Oscorp", "Gringotts",
    "Monarch", "Dunder", "Bluth", "Prestige", "Sterling", "Nakatomi", "Virtucon", "Zorg", "Halcyon",
    "Ollivander", "Kramerica", "Lacuna", "Primatech", "Rekall", "Sirius", "Tessier", "Weyland", "Yoyodyne",
    "Zenith", "Copperline", "Harbor", "Juniper", "Kestrel", "Lumen", "Meridian", "Nimbus", "Orchard",
)
COMPANY_SECOND = (
    "Analytics", "Logistics", "Health", "Foods", "Robotics", "Media", "Energy", "Labs", "Systems",
    "Retail", "Bank", "Insurance", "Studios", "Freight", "Pharma", "Software", "Outfitters", "Dental",
    "Legal", "Travel", "Motors", "Hotels", "Capital", "Learning", "Markets", "Biotech", "Airlines",
)
COMPANY_SUFFIX = ("Inc", "GmbH", "Ltd", "LLC", "SA", "BV", "Co", "AG", "Oy", "KK")

FIRST_NAMES = (
    "Ada", "Alan", "Grace", "Linus", "Ken", "Barbara", "Edsger", "Margaret", "Dennis", "Frances", "Tim",
    "Radia", "Donald", "Hedy", "John", "Katherine", "Guido", "Sophie", "Niklaus", "Anita", "Bjarne", "Shafi",
    "Yukihiro", "Annie", "Leslie", "Joan", "Vint", "Karen", "Whitfield", "Mary", "Ivan", "Carol", "Larry",
    "Amara", "Chen", "Diego", "Fatima", "Hiro", "Ingrid", "Jamal", "Kofi", "Lena", "Mateo", "Nadia", "Omar",
    "Priya", "Quinn", "Rosa", "Sven", "Tariq", "Uma", "Viktor", "Wen", "Ximena", "Yara", "Zane",
)
LAST_NAMES = (
    "Lovelace", "Turing", "Hopper", "Torvalds", "Thompson", "Liskov", "Dijkstra", "Hamilton", "Ritchie",
    "Allen", "Berners-Lee", "Perlman", "Knuth", "Lamarr", "McCarthy", "Johnson", "van Rossum", "Wilson",
    "Wirth", "Borg", "Stroustrup", "Goldwasser", "Matsumoto", "Easley", "Lamport", "Clarke", "Cerf",
    "Jones", "Diffie", "Keller", "Sutherland", "Shaw", "Page", "Okafor", "Wei", "Alvarez", "Haddad",
    "Tanaka", "Larsen", "Mensah", "Novak", "Rossi", "Petrov", "Singh", "Costa", "Nguyen", "Kowalski",
)

# The CSM team: (name, email, slack_user_id).
CSMS = (
    ("Maya Patel", "maya.patel@example.com", "U01MAYAPATEL"),
    ("Jonas Berg", "jonas.berg@example.com", "U02JONASBERG"),
    ("Chloe Martin", "chloe.martin@example.com", "U03CHLOEMRTN"),
    ("Kwame Asante", "kwame.asante@example.com", "U04KWAMEASNT"),
    ("Lucia Romero", "lucia.romero@example.com", "U05LUCIAROMR"),
    ("Ethan Brooks", "ethan.brooks@example.com", "U06ETHANBRKS"),
    ("Aiko Sato", "aiko.sato@example.com", "U07AIKOSATO0"),
    ("Noah Fischer", "noah.fischer@example.com", "U08NOAHFSCHR"),
)

# Features with a base popularity; the first ones are what everyone uses.
FEATURES = (
    ("login", 10.0), ("dashboard.view", 8.0), ("search", 6.0), ("report.view", 5.0), ("task.update", 5.0),
    ("comment.add", 4.0), ("project.create", 2.0), ("file.upload", 3.0), ("report.export", 2.0),
    ("integration.sync", 2.0), ("automation.run", 1.5), ("api.call", 1.5), ("calendar.view", 2.0),
    ("admin.users", 0.6), ("admin.settings", 0.5), ("billing.view", 0.3),
)
ADMIN_FEATURES = ("admin.users", "admin.settings", "billing.view")
MONTH_END_FEATURES = ("report.view", "report.export")

TICKET_SUBJECTS = (
    "How do I export a report to CSV?", "Cannot invite a new user", "SSO login question",
    "Dashboard loads slowly", "Feature request: bulk edit", "Integration sync shows a warning",
    "Billing address change", "Password reset email not received", "API rate limit question",
    "How to set up automations", "Permissions for guest users", "Calendar view timezone question",
)
STORM_SUBJECTS = (
    "URGENT: data missing after sync", "Production outage - nothing loads", "Reports show wrong totals",
    "Integration broken again", "Users locked out since this morning", "Export fails with error 500",
    "Still not fixed - escalating", "Automation deleted our records", "Critical: API returns errors",
    "Performance unacceptable for our team",
)

POSITIVE_TEXTS = (
    "The team loves the new dashboards, great work.",
    "Support was quick and helpful, thanks!",
    "Rolling this out to two more departments next quarter.",
    "Automations saved us hours every week.",
)
NEUTRAL_TEXTS = (
    "Can we schedule a call about the roadmap?",
    "We will review the integration options internally.",
    "Please send the invoice to our finance team.",
)
NEGATIVE_TEXTS = (
    "Honestly we are disappointed, the product keeps failing us and leadership is questioning the value.",
    "We are evaluating alternatives before the renewal, the last months were frustrating.",
    "Terrible experience lately, too many bugs and slow answers from support.",
    "I can no longer recommend this tool to my team, the problems are not getting fixed.",
)

# Sparse mode: what an account comes back for every few weeks, and the features its visits use (weights).
SPARSE_PURPOSES = {
    "billing_run": (("login", 2.0), ("invoice.run", 4.0), ("invoice.review", 3.0), ("payment.approve", 2.0),
                    ("report.export", 1.0)),
    "reporting": (("login", 2.0), ("report.view", 4.0), ("report.export", 3.0), ("dashboard.view", 2.0),
                  ("data.import", 1.0)),
    "planning": (("login", 2.0), ("plan.update", 4.0), ("forecast.update", 3.0), ("budget.review", 2.0),
                 ("report.export", 1.0)),
    "repeat_purchase": (("login", 2.0), ("catalog.search", 3.0), ("order.place", 4.0), ("order.review", 2.0),
                        ("invoice.download", 1.0)),
}
# Sparse mode: segment -> (share of accounts, yearly contract value range)
SPARSE_SEGMENTS = {
    "smb": (0.6, (1_000.0, 15_000.0)),
    "mid_market": (0.3, (10_000.0, 60_000.0)),
    "enterprise": (0.1, (50_000.0, 250_000.0)),
}
