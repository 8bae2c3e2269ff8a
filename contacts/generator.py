"""Realistic, deterministic audience data for the demo and the benchmarks.

One generator, two loaders:

- ``load_with_orm``: ``bulk_create`` inside ``tenant_context``, on SQLite or PostgreSQL (the demo:
  a few thousand contacts);
- ``load_with_copy``: PostgreSQL ``COPY`` streamed in chunks while a worker process generates the
  next ones (the benchmark tenant: a million contacts, ten million events; see bench/build_tenant.py).

Each contact gets every first-class field with realistic fill rates and skews (countries, names,
cities, phones, demographics, B2B fields, tag lists, custom attributes), a lifecycle stage that
``contacts.lifecycle.derive_stage`` would give it, events over the last 180 days with a heavy tail
per contact, the daily rollups of exactly those events, a consent ledger with its current state,
and the stage history.

Determinism: a seed gives the same data (relative to ``now``) whatever the loader or its batch
size, because contact *i* always comes from the random stream of its block of ``BLOCK`` contacts.
Contact numbers (in emails, external ids, anonymous ids and order ids) start after the tenant's
highest contact id, so loading twice into one tenant never collides on a unique identity.
Email domains use the reserved ``.example`` top-level domain (RFC 2606): a demo can never mail a
real person.
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import math
import multiprocessing
import queue
import random
import time
import traceback
import unicodedata
from array import array
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Final, TypeVar

from contacts.models import (
    AttributeDefinition,
    Channel,
    ConsentRecord,
    ConsentSource,
    ConsentState,
    ConsentStatus,
    Contact,
    Event,
    EventDailyRollup,
    LegalBasis,
    LifecycleStage,
    LifecycleTransition,
)
from tenants.context import tenant_context

if TYPE_CHECKING:
    from django.db import models

    from tenants.models import Tenant

DAY: Final = 86_400
HISTORY_DAYS: Final = 180
BLOCK: Final = 1_000  # contacts per random stream: the output never depends on a loader's batch size
PURPOSE: Final = "marketing"
CURRENCY: Final = "EUR"
WORDING_VERSION: Final = "2025-03"
CONSENT_ACTOR: Final = "import"
# Sessions, carts and email clicks run up to ~1 h past their start: activity ends 2 h before now.
END_MARGIN: Final = 2 * 3600

NEW_VISITOR: Final = LifecycleStage.NEW_VISITOR.value
LEAD: Final = LifecycleStage.LEAD.value
FIRST_TIME_BUYER: Final = LifecycleStage.FIRST_TIME_BUYER.value
REPEAT_CUSTOMER: Final = LifecycleStage.REPEAT_CUSTOMER.value
LOYAL_ADVOCATE: Final = LifecycleStage.LOYAL_ADVOCATE.value
# Planned stage mix (index = stage code); purchases then decide the stage by the tenant's rules.
STAGES: Final = (NEW_VISITOR, LEAD, FIRST_TIME_BUYER, REPEAT_CUSTOMER, LOYAL_ADVOCATE)
STAGE_MIX: Final = (0.30, 0.35, 0.15, 0.15, 0.05)
# Relative activity (events) per stage: loyal advocates are the heavy tail.
STAGE_ACTIVITY: Final = (0.35, 0.8, 1.1, 1.7, 2.8)

WORDING: Final = {
    Channel.EMAIL.value: "Yes, send me offers and news by email. I can unsubscribe at any time.",
    Channel.SMS.value: "Yes, send me offers by text message. Reply STOP to opt out.",
    Channel.PUSH.value: "Yes, send me offers as push notifications. I can turn them off in the app.",
}

T = TypeVar("T")

# (occurred_at epoch seconds, name, revenue in cents or None, properties as JSON text, source)
EventRow = tuple[int, str, int | None, str, str]
# (day number since 1970-01-01, name, count, revenue in cents)
RollupRow = tuple[int, str, int, int]
# (occurred_at, channel, status): purpose is always PURPOSE
ConsentRow = tuple[int, str, str]
# (occurred_at, from_stage, to_stage, reason)
TransitionRow = tuple[int, str, str, str]


# --- lifecycle ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LifecycleRules:
    """A tenant's stage thresholds (the same rules as ``contacts.lifecycle.derive_stage``)."""

    repeat_min_orders: int = 2
    loyal_min_orders: int = 5
    loyal_min_revenue_cents: int = 50_000

    @classmethod
    def for_tenant(cls, tenant: Tenant) -> LifecycleRules:
        return cls(
            repeat_min_orders=int(tenant.repeat_customer_min_orders),
            loyal_min_orders=int(tenant.loyal_advocate_min_orders),
            loyal_min_revenue_cents=int(Decimal(tenant.loyal_advocate_min_revenue) * 100),
        )

    def stage(self, *, orders: int, revenue_cents: int, identified: bool) -> str:
        if orders >= self.loyal_min_orders and revenue_cents >= self.loyal_min_revenue_cents:
            return LOYAL_ADVOCATE
        if orders >= self.repeat_min_orders:
            return REPEAT_CUSTOMER
        if orders >= 1:
            return FIRST_TIME_BUYER
        return LEAD if identified else NEW_VISITOR


# --- weighted choices ---------------------------------------------------------------------------
class Weighted(Sequence[T]):
    """Items with weights; ``pick`` draws one with a single ``random()`` and a bisection."""

    __slots__ = ("cum", "items")

    def __init__(self, items: Sequence[T], weights: Sequence[float] | None = None) -> None:
        if not items:
            raise ValueError("Nothing to choose from.")
        weights = weights if weights is not None else zipf(len(items))
        total = float(sum(weights))
        running, cum = 0.0, []
        for w in weights:
            running += w
            cum.append(running / total)
        cum[-1] = 1.0
        self.items: tuple[T, ...] = tuple(items)
        self.cum: tuple[float, ...] = tuple(cum)

    def pick(self, r: random.Random) -> T:
        return self.items[bisect.bisect_right(self.cum, r.random())]

    def pick_many(self, r: random.Random, k: int) -> list[T]:
        """Up to ``k`` distinct items, popular ones more often."""
        items, cum, rand = self.items, self.cum, r.random
        return list(dict.fromkeys(items[bisect.bisect_right(cum, rand())] for _ in range(k)))

    def __getitem__(self, index: Any) -> Any:
        return self.items[index]

    def __len__(self) -> int:
        return len(self.items)


def zipf(n: int, s: float = 0.8) -> list[float]:
    """Weights 1/rank^s: a few common values and a long tail, like real names and cities."""
    return [1.0 / (rank**s) for rank in range(1, n + 1)]


def fill_pattern(r: random.Random, pattern: str) -> str:
    """Replace ``#`` by a digit, ``N`` by 2-9 and ``@`` by an upper-case letter."""
    out = []
    for ch in pattern:
        if ch == "#":
            out.append("0123456789"[int(r.random() * 10)])
        elif ch == "N":
            out.append("23456789"[int(r.random() * 8)])
        elif ch == "@":
            out.append("ABCDEFGHJKLMNPRSTUVWXY"[int(r.random() * 22)])
        else:
            out.append(ch)
    return "".join(out)


_SLUGS: dict[str, str] = {}
_TRANSLIT = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "ø": "o", "æ": "ae", "ł": "l", "å": "a"})


def email_slug(name: str) -> str:
    """ASCII, lower-case, letters only: ``Müller`` → ``mueller``, ``O'Brien`` → ``obrien``."""
    slug = _SLUGS.get(name)
    if slug is None:
        ascii_name = unicodedata.normalize("NFKD", name.lower().translate(_TRANSLIT)).encode("ascii", "ignore")
        slug = _SLUGS[name] = "".join(ch for ch in ascii_name.decode() if ch.isalpha())
    return slug


# --- countries ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class City:
    name: str
    region: str
    postal_pattern: str
    time_zone: str


@dataclass(frozen=True)
class CountryProfile:
    code: str
    locales: Weighted[str]
    cities: Weighted[City]
    female: Weighted[str]
    male: Weighted[str]
    last: Weighted[str]
    domains: Weighted[str]
    phones: tuple[str, ...]  # patterns for fill_pattern, E.164
    company_suffixes: tuple[str, ...]


def _pairs(text: str) -> tuple[list[str], list[float]]:
    items = [part.rsplit(":", 1) for part in text.split()]
    return [name for name, _ in items], [float(weight) for _, weight in items]


def _country(
    code: str, *, locales: str, cities: str, names: tuple[str, str, str], domains: str, phones: str, companies: str
) -> CountryProfile:
    """A country from compact text: ``name:weight`` pairs, one ``city|region|postcode|zone`` per line."""
    city_rows = [City(*line.strip().split("|")) for line in cities.strip().splitlines()]
    female, male, last = (Weighted(text.split(", ")) for text in names)
    return CountryProfile(
        code=code,
        locales=Weighted(*_pairs(locales)),
        cities=Weighted(city_rows, zipf(len(city_rows), 1.0)),
        female=female,
        male=male,
        last=last,
        domains=Weighted(*_pairs(domains)),
        phones=tuple(phones.split()),
        company_suffixes=tuple(companies.split("|")),
    )


_DE_NAMES = (
    "Anna, Laura, Julia, Lena, Sarah, Lisa, Katharina, Marie, Sophie, Hannah, Lea, Johanna, Emma, Mia, "
    "Sabine, Claudia, Petra, Andrea, Nicole, Stefanie, Jana, Franziska, Carina, Melanie",
    "Lukas, Jonas, Leon, Felix, Maximilian, Paul, Tim, Jan, Niklas, David, Thomas, Michael, Andreas, "
    "Stefan, Christian, Markus, Daniel, Alexander, Florian, Tobias, Sebastian, Matthias, Jürgen, Moritz",
    "Müller, Schmidt, Schneider, Fischer, Weber, Meyer, Wagner, Becker, Schulz, Hoffmann, Schäfer, Koch, "
    "Bauer, Richter, Klein, Wolf, Schröder, Neumann, Schwarz, Zimmermann, Braun, Krüger, Hofmann, "
    "Hartmann, Lange, Schmitt, Werner, Krause, Meier, Lehmann, Köhler, Huber, Kaiser, Fuchs, Peters",
)
_NL_NAMES = (
    "Emma, Julia, Sophie, Lotte, Sanne, Anouk, Fleur, Lisa, Eva, Iris, Femke, Noa, Saskia, Marieke, Tess, Roos",
    "Daan, Sem, Lucas, Levi, Thijs, Jesse, Ruben, Bram, Lars, Tim, Niels, Sander, Joost, Pieter, Milan, Stijn",
    "de Jong, Jansen, de Vries, van den Berg, van Dijk, Bakker, Janssen, Visser, Smit, Meijer, de Boer, "
    "Mulder, de Groot, Bos, Vos, Peters, Hendriks, van Leeuwen, Dekker, Brouwer, Maes, Willems, Claes",
)

# Weights: DE, FR, US, GB, NL, ES, IT, PL, then a tail of smaller markets.
COUNTRIES: Final = Weighted(
    [
        _country(
            "DE",
            locales="de-DE:94 en-GB:4 tr-TR:2",
            cities="""
                Berlin|Berlin|1####|Europe/Berlin
                Hamburg|Hamburg|2####|Europe/Berlin
                München|Bayern|8####|Europe/Berlin
                Köln|Nordrhein-Westfalen|5####|Europe/Berlin
                Frankfurt am Main|Hessen|60###|Europe/Berlin
                Stuttgart|Baden-Württemberg|70###|Europe/Berlin
                Düsseldorf|Nordrhein-Westfalen|40###|Europe/Berlin
                Leipzig|Sachsen|04###|Europe/Berlin
                Dortmund|Nordrhein-Westfalen|44###|Europe/Berlin
                Dresden|Sachsen|01###|Europe/Berlin
                Hannover|Niedersachsen|30###|Europe/Berlin
                Nürnberg|Bayern|90###|Europe/Berlin
                Bremen|Bremen|28###|Europe/Berlin
                Freiburg im Breisgau|Baden-Württemberg|79###|Europe/Berlin
            """,
            names=_DE_NAMES,
            domains="gmail.example:30 gmx.example:24 web.example:20 t-online.example:10 outlook.example:10 "
            "posteo.example:3 yahoo.example:3",
            phones="+49151######## +49152######## +49157######## +49160####### +49170####### +49171####### "
            "+49172####### +49176######## +49177######## +49179#######",
            companies="GmbH|AG|GmbH & Co. KG|UG",
        ),
        _country(
            "FR",
            locales="fr-FR:97 en-GB:3",
            cities="""
                Paris|Île-de-France|750##|Europe/Paris
                Marseille|Provence-Alpes-Côte d'Azur|130##|Europe/Paris
                Lyon|Auvergne-Rhône-Alpes|6900#|Europe/Paris
                Toulouse|Occitanie|310##|Europe/Paris
                Nice|Provence-Alpes-Côte d'Azur|060##|Europe/Paris
                Nantes|Pays de la Loire|440##|Europe/Paris
                Strasbourg|Grand Est|670##|Europe/Paris
                Montpellier|Occitanie|340##|Europe/Paris
                Bordeaux|Nouvelle-Aquitaine|330##|Europe/Paris
                Lille|Hauts-de-France|590##|Europe/Paris
                Rennes|Bretagne|350##|Europe/Paris
            """,
            names=(
                "Camille, Léa, Manon, Chloé, Emma, Inès, Sarah, Julie, Marie, Pauline, Claire, Sophie, Nathalie, "
                "Isabelle, Céline, Aurélie, Lucie, Juliette, Margaux, Élodie",
                "Lucas, Hugo, Louis, Nathan, Gabriel, Thomas, Nicolas, Julien, Maxime, Antoine, Alexandre, Pierre, "
                "Romain, Mathieu, Quentin, Guillaume, Théo, Baptiste, Arthur, Clément",
                "Martin, Bernard, Dubois, Thomas, Robert, Richard, Petit, Durand, Leroy, Moreau, Simon, Laurent, "
                "Lefebvre, Michel, Garcia, David, Bertrand, Roux, Vincent, Fournier, Morel, Girard, André, Lefèvre, "
                "Mercier, Dupont, Lambert, Bonnet, François, Martinez",
            ),
            domains="gmail.example:32 orange.example:22 free.example:14 hotmail.example:14 laposte.example:8 "
            "sfr.example:6 yahoo.example:4",
            phones="+3361####### +3362####### +3364####### +3365####### +3366####### +3367####### "
            "+3368####### +3375####### +3376####### +3377####### +3378#######",
            companies="SA|SAS|SARL",
        ),
        _country(
            "US",
            locales="en-US:90 es-US:10",
            cities="""
                New York|New York|100##|America/New_York
                Los Angeles|California|900##|America/Los_Angeles
                Chicago|Illinois|606##|America/Chicago
                Houston|Texas|770##|America/Chicago
                Phoenix|Arizona|850##|America/Phoenix
                Philadelphia|Pennsylvania|191##|America/New_York
                San Francisco|California|941##|America/Los_Angeles
                Seattle|Washington|981##|America/Los_Angeles
                Austin|Texas|787##|America/Chicago
                Boston|Massachusetts|021##|America/New_York
                Denver|Colorado|802##|America/Denver
                Miami|Florida|331##|America/New_York
            """,
            names=(
                "Emily, Olivia, Emma, Ava, Sophia, Isabella, Madison, Abigail, Jessica, Ashley, Jennifer, Sarah, "
                "Elizabeth, Megan, Hannah, Lauren, Mia, Chloe",
                "James, John, Robert, Michael, William, David, Joseph, Daniel, Matthew, Christopher, Andrew, "
                "Joshua, Ryan, Tyler, Brandon, Ethan, Noah, Jacob",
                "Smith, Johnson, Williams, Brown, Jones, Garcia, Miller, Davis, Rodriguez, Martinez, Hernandez, "
                "Lopez, Wilson, Anderson, Taylor, Thomas, Moore, Jackson, Martin, Lee, Thompson, White, Harris, "
                "Clark, Lewis, Nguyen, Walker, Young",
            ),
            domains="gmail.example:45 yahoo.example:15 outlook.example:14 icloud.example:12 aol.example:6 "
            "comcast.example:8",
            phones="+1212N###### +1310N###### +1312N###### +1713N###### +1602N###### +1215N###### +1415N###### "
            "+1206N###### +1512N###### +1617N###### +1303N###### +1305N######",
            companies="Inc.|LLC|Corp.",
        ),
        _country(
            "GB",
            locales="en-GB:97 pl-PL:3",
            cities="""
                London|Greater London|SW1# #@@|Europe/London
                Manchester|Greater Manchester|M## #@@|Europe/London
                Birmingham|West Midlands|B## #@@|Europe/London
                Leeds|West Yorkshire|LS# #@@|Europe/London
                Glasgow|Scotland|G## #@@|Europe/London
                Liverpool|Merseyside|L## #@@|Europe/London
                Bristol|Bristol|BS# #@@|Europe/London
                Edinburgh|Scotland|EH# #@@|Europe/London
                Cardiff|Wales|CF## #@@|Europe/London
                Sheffield|South Yorkshire|S## #@@|Europe/London
            """,
            names=(
                "Olivia, Amelia, Isla, Ava, Emily, Sophie, Grace, Lily, Charlotte, Jessica, Chloe, Lucy, Emma, "
                "Hannah, Rebecca, Katie, Holly, Ellie",
                "Oliver, George, Harry, Jack, Jacob, Charlie, Thomas, James, William, Daniel, Samuel, Joshua, "
                "Alfie, Callum, Liam, Matthew, Ben, Ryan",
                "Smith, Jones, Taylor, Brown, Williams, Wilson, Johnson, Davies, Robinson, Wright, Thompson, Evans, "
                "Walker, White, Roberts, Green, Hall, Wood, Jackson, Clarke, Hughes, Edwards, Turner, Hill, Moore",
            ),
            domains="gmail.example:38 hotmail.example:18 outlook.example:14 yahoo.example:10 btinternet.example:10 "
            "icloud.example:10",
            phones="+44751####### +44754####### +44771####### +44772####### +44774####### +44777####### "
            "+44781####### +44786####### +44790####### +44792####### +44795####### +44798#######",
            companies="Ltd|PLC|LLP",
        ),
        _country(
            "NL",
            locales="nl-NL:95 en-GB:5",
            cities="""
                Amsterdam|Noord-Holland|10## @@|Europe/Amsterdam
                Rotterdam|Zuid-Holland|30## @@|Europe/Amsterdam
                Den Haag|Zuid-Holland|25## @@|Europe/Amsterdam
                Utrecht|Utrecht|35## @@|Europe/Amsterdam
                Eindhoven|Noord-Brabant|56## @@|Europe/Amsterdam
                Groningen|Groningen|97## @@|Europe/Amsterdam
                Tilburg|Noord-Brabant|50## @@|Europe/Amsterdam
                Almere|Flevoland|13## @@|Europe/Amsterdam
            """,
            names=_NL_NAMES,
            domains="gmail.example:35 ziggo.example:20 hotmail.example:20 kpnmail.example:15 outlook.example:10",
            phones="+3161####### +3162####### +3163####### +3164####### +3165#######",
            companies="B.V.|N.V.",
        ),
        _country(
            "ES",
            locales="es-ES:90 ca-ES:10",
            cities="""
                Madrid|Comunidad de Madrid|280##|Europe/Madrid
                Barcelona|Cataluña|080##|Europe/Madrid
                Valencia|Comunitat Valenciana|460##|Europe/Madrid
                Sevilla|Andalucía|410##|Europe/Madrid
                Zaragoza|Aragón|500##|Europe/Madrid
                Málaga|Andalucía|290##|Europe/Madrid
                Bilbao|País Vasco|480##|Europe/Madrid
                Palma|Illes Balears|070##|Europe/Madrid
                Las Palmas de Gran Canaria|Canarias|350##|Atlantic/Canary
            """,
            names=(
                "Lucía, María, Paula, Laura, Marta, Sara, Carmen, Ana, Elena, Cristina, Sofía, Alba, Irene, Raquel",
                "Hugo, Pablo, Alejandro, Daniel, Javier, David, Carlos, Sergio, Adrián, Manuel, Jorge, Álvaro, "
                "Diego, Miguel",
                "García, Rodríguez, González, Fernández, López, Martínez, Sánchez, Pérez, Gómez, Martín, "
                "Jiménez, Ruiz, Hernández, Díaz, Moreno, Muñoz, Álvarez, Romero, Alonso, Navarro",
            ),
            domains="gmail.example:45 hotmail.example:25 yahoo.example:10 telefonica.example:10 outlook.example:10",
            phones="+346########",
            companies="S.L.|S.A.",
        ),
        _country(
            "IT",
            locales="it-IT:100",
            cities="""
                Roma|Lazio|001##|Europe/Rome
                Milano|Lombardia|201##|Europe/Rome
                Napoli|Campania|801##|Europe/Rome
                Torino|Piemonte|101##|Europe/Rome
                Palermo|Sicilia|901##|Europe/Rome
                Bologna|Emilia-Romagna|401##|Europe/Rome
                Firenze|Toscana|501##|Europe/Rome
                Genova|Liguria|161##|Europe/Rome
            """,
            names=(
                "Giulia, Chiara, Francesca, Sara, Martina, Valentina, Alessia, Elisa, Federica, Silvia, Giorgia, "
                "Sofia, Laura, Anna",
                "Francesco, Alessandro, Lorenzo, Matteo, Andrea, Marco, Luca, Giuseppe, Davide, Simone, Federico, "
                "Riccardo, Stefano, Giovanni",
                "Rossi, Russo, Ferrari, Esposito, Bianchi, Romano, Colombo, Ricci, Marino, Greco, Bruno, Gallo, "
                "Conti, De Luca, Costa, Giordano, Mancini, Rizzo, Lombardi, Moretti",
            ),
            domains="gmail.example:40 libero.example:25 hotmail.example:15 virgilio.example:10 tiscali.example:10",
            phones="+39320####### +39333####### +39347####### +39351####### +39388#######",
            companies="S.r.l.|S.p.A.",
        ),
        _country(
            "PL",
            locales="pl-PL:100",
            cities="""
                Warszawa|mazowieckie|0#-###|Europe/Warsaw
                Kraków|małopolskie|3#-###|Europe/Warsaw
                Łódź|łódzkie|9#-###|Europe/Warsaw
                Wrocław|dolnośląskie|5#-###|Europe/Warsaw
                Poznań|wielkopolskie|6#-###|Europe/Warsaw
                Gdańsk|pomorskie|80-###|Europe/Warsaw
                Szczecin|zachodniopomorskie|70-###|Europe/Warsaw
            """,
            names=(
                "Anna, Zuzanna, Julia, Maja, Zofia, Hanna, Aleksandra, Natalia, Katarzyna, Magdalena, Agnieszka, "
                "Joanna, Monika, Karolina",
                "Jakub, Jan, Antoni, Szymon, Filip, Kacper, Piotr, Tomasz, Paweł, Krzysztof, Michał, Marcin, "
                "Łukasz, Mateusz",
                "Nowak, Kowalski, Wiśniewski, Wójcik, Kowalczyk, Kamiński, Lewandowski, Zieliński, Szymański, "
                "Woźniak, Dąbrowski, Kozłowski, Jankowski, Mazur, Kwiatkowski",
            ),
            domains="gmail.example:40 wp.example:25 onet.example:20 interia.example:15",
            phones="+4850####### +4851####### +4853####### +4857####### +4860####### +4866####### +4869####### "
            "+4872####### +4878####### +4879####### +4888#######",
            companies="Sp. z o.o.|S.A.",
        ),
        _country(
            "AT",
            locales="de-AT:97 en-GB:3",
            cities="""
                Wien|Wien|1###|Europe/Vienna
                Graz|Steiermark|80##|Europe/Vienna
                Linz|Oberösterreich|40##|Europe/Vienna
                Salzburg|Salzburg|50##|Europe/Vienna
                Innsbruck|Tirol|60##|Europe/Vienna
            """,
            names=_DE_NAMES,
            domains="gmail.example:35 gmx.example:30 aon.example:20 outlook.example:15",
            phones="+43664####### +43660####### +43676####### +43699########",
            companies="GmbH|AG",
        ),
        _country(
            "CH",
            locales="de-CH:65 fr-CH:28 it-CH:7",
            cities="""
                Zürich|Zürich|80##|Europe/Zurich
                Genève|Genève|12##|Europe/Zurich
                Basel|Basel-Stadt|40##|Europe/Zurich
                Bern|Bern|30##|Europe/Zurich
                Lausanne|Vaud|10##|Europe/Zurich
            """,
            names=_DE_NAMES,
            domains="gmail.example:35 bluewin.example:35 gmx.example:15 outlook.example:15",
            phones="+4176####### +4177####### +4178####### +4179#######",
            companies="AG|GmbH|SA",
        ),
        _country(
            "BE",
            locales="nl-BE:60 fr-BE:40",
            cities="""
                Brussel|Brussels Hoofdstedelijk Gewest|1###|Europe/Brussels
                Antwerpen|Antwerpen|20##|Europe/Brussels
                Gent|Oost-Vlaanderen|90##|Europe/Brussels
                Liège|Liège|40##|Europe/Brussels
                Brugge|West-Vlaanderen|80##|Europe/Brussels
            """,
            names=_NL_NAMES,
            domains="gmail.example:40 telenet.example:25 skynet.example:15 hotmail.example:20",
            phones="+32470###### +32475###### +32485###### +32495######",
            companies="NV|BV|SRL",
        ),
        _country(
            "SE",
            locales="sv-SE:95 en-GB:5",
            cities="""
                Stockholm|Stockholms län|1## ##|Europe/Stockholm
                Göteborg|Västra Götalands län|4## ##|Europe/Stockholm
                Malmö|Skåne län|2## ##|Europe/Stockholm
                Uppsala|Uppsala län|75# ##|Europe/Stockholm
            """,
            names=(
                "Alice, Maja, Elsa, Astrid, Wilma, Ebba, Saga, Klara, Ingrid, Karin, Linnea, Frida",
                "William, Liam, Noah, Hugo, Lucas, Oscar, Elias, Erik, Lars, Anders, Johan, Nils",
                "Andersson, Johansson, Karlsson, Nilsson, Eriksson, Larsson, Olsson, Persson, Svensson, Gustafsson",
            ),
            domains="gmail.example:50 hotmail.example:25 telia.example:25",
            phones="+4670####### +4672####### +4673####### +4676#######",
            companies="AB",
        ),
        _country(
            "DK",
            locales="da-DK:100",
            cities="""
                København|Hovedstaden|2###|Europe/Copenhagen
                Aarhus|Midtjylland|80##|Europe/Copenhagen
                Odense|Syddanmark|50##|Europe/Copenhagen
                Aalborg|Nordjylland|90##|Europe/Copenhagen
            """,
            names=(
                "Ida, Emma, Freja, Sofie, Anna, Mette, Camilla, Louise, Signe, Maria",
                "William, Noah, Oscar, Lucas, Mikkel, Rasmus, Frederik, Jens, Søren, Mads",
                "Nielsen, Jensen, Hansen, Pedersen, Andersen, Christensen, Larsen, Sørensen, Rasmussen, Jørgensen",
            ),
            domains="gmail.example:50 hotmail.example:25 jubii.example:25",
            phones="+4526###### +4527###### +4528###### +4567###### +4568######",
            companies="ApS|A/S",
        ),
        _country(
            "IE",
            locales="en-IE:95 ga-IE:5",
            cities="""
                Dublin|Leinster|D0# @###|Europe/Dublin
                Cork|Munster|T12 @###|Europe/Dublin
                Galway|Connacht|H91 @###|Europe/Dublin
                Limerick|Munster|V94 @###|Europe/Dublin
            """,
            names=(
                "Aoife, Ciara, Niamh, Saoirse, Sinéad, Emma, Grace, Róisín, Orla, Clodagh",
                "Seán, Conor, Cian, Oisín, Darragh, Liam, Patrick, Eoin, Cillian, Ronan",
                "Murphy, Kelly, O'Sullivan, Walsh, Smith, O'Brien, Byrne, Ryan, O'Connor, O'Neill",
            ),
            domains="gmail.example:50 eircom.example:25 hotmail.example:25",
            phones="+35383####### +35385####### +35386####### +35387####### +35389#######",
            companies="Ltd|DAC",
        ),
        _country(
            "PT",
            locales="pt-PT:100",
            cities="""
                Lisboa|Lisboa|1###-###|Europe/Lisbon
                Porto|Porto|4###-###|Europe/Lisbon
                Braga|Braga|47##-###|Europe/Lisbon
                Coimbra|Coimbra|30##-###|Europe/Lisbon
                Funchal|Madeira|90##-###|Atlantic/Madeira
            """,
            names=(
                "Maria, Ana, Beatriz, Mariana, Inês, Leonor, Carolina, Sofia, Matilde, Rita",
                "João, Rodrigo, Francisco, Martim, Santiago, Tomás, Duarte, Pedro, Miguel, Afonso",
                "Silva, Santos, Ferreira, Pereira, Oliveira, Costa, Rodrigues, Martins, Jesus, Sousa",
            ),
            domains="gmail.example:50 sapo.example:30 hotmail.example:20",
            phones="+35191####### +35192####### +35193####### +35196#######",
            companies="Lda.|S.A.",
        ),
    ],
    [28, 14, 12, 10, 7, 6, 6, 5, 3, 3, 2, 2, 1, 0.5, 0.5],
)

# --- people ------------------------------------------------------------------------------------
GENDERS: Final = Weighted(["female", "male", "diverse", ""], [50, 46, 1.5, 2.5])
INCOME_BANDS: Final = Weighted(["<25k", "25-50k", "50-75k", "75-100k", "100-150k", "150k+"], [15, 30, 25, 15, 10, 5])
EDUCATION: Final = Weighted(["secondary", "vocational", "bachelor", "master", "doctorate"], [25, 25, 30, 17, 3])
JOB_ROLES: Final = Weighted(
    [
        "Student", "Software developer", "Teacher", "Nurse", "Sales assistant", "Accountant", "Engineer",
        "Designer", "Retired", "Self-employed", "Marketing manager", "Civil servant", "Physician",
        "Consultant", "Project manager", "Craftsperson", "Chef", "Lawyer", "Researcher", "Driver",
    ]
)  # fmt: skip
B2B_ROLES: Final = Weighted(
    [
        "Head of Marketing", "CRM Manager", "E-commerce Manager", "Marketing Director", "CEO",
        "Procurement Manager", "Sales Director", "Product Manager", "Operations Manager", "CTO",
    ]
)  # fmt: skip
INDUSTRIES: Final = Weighted(
    [
        "retail", "software", "manufacturing", "healthcare", "financial services", "education",
        "hospitality", "logistics", "media", "construction", "public sector", "consulting",
    ]
)  # fmt: skip
COMPANY_SIZES: Final = Weighted(["1-10", "11-50", "51-200", "201-1000", "1001-5000", "5000+"], [20, 25, 22, 18, 9, 6])
COMPANY_WORDS: Final = Weighted(
    ["Nordwind", "Bluepeak", "Greenfield", "Silverline", "Brightline", "Helix", "Vertex", "Nimbus", "Alpen",
     "Harbour", "Lumen", "Quantum", "Atlas", "Cedar", "Polaris", "Ember"]
)  # fmt: skip
COMPANY_SECTORS: Final = Weighted(
    ["Digital", "Logistics", "Solutions", "Systems", "Analytics", "Foods", "Retail", "Health", "Media", "Bau"]
)
LEAD_BUYING_STAGES: Final = Weighted(["awareness", "consideration", "evaluation"], [45, 35, 20])
CUSTOMER_BUYING_STAGES: Final = Weighted(["purchase", "retention", "expansion"], [30, 55, 15])

INTERESTS: Final = Weighted(
    [
        "running", "fashion", "travel", "fitness", "outdoor", "hiking", "sneakers", "cooking", "yoga", "tech",
        "cycling", "music", "photography", "football", "home-decor", "beauty", "coffee", "gaming", "reading",
        "gardening", "sustainability", "tennis", "skiing", "pets", "parenting", "wine", "streetwear", "cars",
    ]
)  # fmt: skip
VALUES: Final = Weighted(
    [
        "quality", "value-for-money", "sustainability", "health", "family", "convenience", "style",
        "innovation", "craftsmanship", "community", "authenticity", "adventure",
    ]
)  # fmt: skip
LIFESTYLES: Final = Weighted(
    [
        "urban", "active", "commuter", "family-life", "suburban", "remote-worker", "student",
        "frequent-traveller", "pet-owner", "rural", "early-riser", "night-owl",
    ]
)  # fmt: skip
ATTITUDES: Final = Weighted(
    [
        "price-sensitive", "brand-loyal", "deal-seeker", "research-driven", "eco-conscious", "premium-seeker",
        "early-adopter", "impulse-buyer", "trend-follower", "sceptical",
    ]
)  # fmt: skip

PLANS_BY_STAGE: Final = (
    Weighted(["free", "pro", "enterprise"], [100, 0, 0]),
    Weighted(["free", "pro", "enterprise"], [85, 13, 2]),
    Weighted(["free", "pro", "enterprise"], [65, 30, 5]),
    Weighted(["free", "pro", "enterprise"], [50, 40, 10]),
    Weighted(["free", "pro", "enterprise"], [30, 52, 18]),
)
SIGNUP_SOURCES: Final = Weighted(
    ["organic_search", "paid_search", "social", "direct", "newsletter", "referral", "partner", "event"],
    [28, 20, 16, 12, 10, 7, 4, 3],
)
# (key, label, type): the custom attributes every generated tenant defines.
ATTRIBUTE_DEFINITIONS: Final = (
    ("plan", "Plan", AttributeDefinition.Type.TEXT.value),
    ("signup_source", "Signup source", AttributeDefinition.Type.TEXT.value),
    ("signup_date", "Signup date", AttributeDefinition.Type.DATE.value),
    ("loyalty_points", "Loyalty points", AttributeDefinition.Type.NUMBER.value),
    ("app_user", "App user", AttributeDefinition.Type.BOOLEAN.value),
)

# --- the shop ------------------------------------------------------------------------------------
# (category, SKU prefix, typical price in euros, interests that predict it)
CATEGORIES: Final = (
    ("shoes", "SH", 95.0, ("running", "sneakers", "streetwear", "fitness")),
    ("apparel", "AP", 49.0, ("fashion", "streetwear", "style")),
    ("accessories", "AC", 29.0, ("fashion", "travel")),
    ("outdoor", "OD", 129.0, ("outdoor", "hiking", "skiing", "cycling")),
    ("sports", "SP", 59.0, ("fitness", "football", "tennis", "yoga", "running")),
    ("kids", "KD", 35.0, ("parenting",)),
    ("home", "HM", 45.0, ("home-decor", "cooking", "gardening", "coffee")),
    ("beauty", "BT", 24.0, ("beauty",)),
)
CATEGORY_WEIGHTS: Final = (30, 22, 12, 12, 10, 5, 5, 4)
PRODUCTS_PER_CATEGORY: Final = 40
CAMPAIGNS: Final = (
    "welcome", "weekly-picks", "new-arrivals", "spring-sale", "summer-sale", "autumn-edit", "black-friday",
    "cyber-monday", "winter-sale", "back-in-stock", "price-drop", "loyalty-rewards", "birthday", "runners-club",
    "outdoor-guide", "last-chance",
)  # fmt: skip


@dataclass(frozen=True)
class Product:
    category: int
    sku: str
    price_cents: int
    page: str  # page_view properties (JSON)
    cart: str  # add_to_cart properties
    abandoned: str  # cart_abandoned properties


def _euros(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


@dataclass(frozen=True)
class Shop:
    """The catalogue the events talk about: products, pages and campaigns."""

    products: Weighted[Product]
    by_category: tuple[Weighted[Product], ...]
    pages: Weighted[str]
    category_pages: tuple[Weighted[str], ...]
    campaigns: Weighted[tuple[str, str]]  # (email_open properties, email_click properties)
    categories: Weighted[int]

    @classmethod
    def build(cls, r: random.Random) -> Shop:
        products: list[Product] = []
        by_category: list[Weighted[Product]] = []
        category_pages: list[Weighted[str]] = []
        for index, (name, prefix, price, _) in enumerate(CATEGORIES):
            mine = []
            for j in range(PRODUCTS_PER_CATEGORY):
                cents = max(499, int(r.lognormvariate(math.log(price), 0.35)) * 100 + (95 if j % 3 else 99))
                sku = f"{prefix}-{1000 + j * 7 + int(r.random() * 7)}"
                mine.append(
                    Product(
                        category=index,
                        sku=sku,
                        price_cents=cents,
                        page=f'{{"path": "/{name}/{sku.lower()}"}}',
                        cart=f'{{"category": "{name}", "sku": "{sku}", "price": {_euros(cents)}}}',
                        abandoned=f'{{"category": "{name}", "sku": "{sku}", "cart_value": {_euros(cents)}}}',
                    )
                )
            products.extend(mine)
            by_category.append(Weighted(mine))
            # A category's pages: its listing, then its products (popular ones first).
            category_pages.append(
                Weighted([f'{{"path": "/{name}"}}'] + [p.page for p in mine], [8.0, *zipf(len(mine))])
            )
        site = ['{"path": "/"}', '{"path": "/sale"}', '{"path": "/search"}', '{"path": "/account"}']
        pages = Weighted(site + [f'{{"path": "/{c[0]}"}}' for c in CATEGORIES] + [p.page for p in products])
        campaigns = Weighted(
            [(f'{{"campaign": "{c}"}}', f'{{"campaign": "{c}", "url": "https://shop.example/{c}"}}') for c in CAMPAIGNS]
        )
        weights = [w / PRODUCTS_PER_CATEGORY for w in CATEGORY_WEIGHTS for _ in range(PRODUCTS_PER_CATEGORY)]
        return cls(
            products=Weighted(products, [w * z for w, z in zip(weights, zipf(len(products), 0.3), strict=True)]),
            by_category=tuple(by_category),
            pages=pages,
            category_pages=tuple(category_pages),
            campaigns=campaigns,
            categories=Weighted(range(len(CATEGORIES)), CATEGORY_WEIGHTS),
        )


# --- the generated contact ---------------------------------------------------------------------
@dataclass(slots=True)
class GeneratedContact:
    """One contact and everything it did, with times as epoch seconds (UTC) and money in cents."""

    number: int
    external_id: str
    anonymous_id: str
    email: str
    phone: str
    push_tokens: list[str]
    first_name: str
    last_name: str
    locale: str
    time_zone: str
    birth_date: dt.date | None
    gender: str
    income_band: str
    education: str
    job_role: str
    country: str
    region: str
    city: str
    postal_code: str
    company: str
    industry: str
    company_size: str
    buying_stage: str
    interests: list[str]
    values: list[str]
    lifestyle: list[str]
    attitudes: list[str]
    attributes: dict[str, Any]
    lifecycle_stage: str
    lifecycle_changed_at: int
    first_seen_at: int
    last_seen_at: int
    last_engaged_at: int | None
    order_count: int
    total_revenue_cents: int
    last_order_at: int | None
    created_at: int
    updated_at: int
    events: list[EventRow] = field(default_factory=list)
    rollups: list[RollupRow] = field(default_factory=list)
    consents: list[ConsentRow] = field(default_factory=list)  # the ledger, oldest first
    transitions: list[TransitionRow] = field(default_factory=list)  # the stage history, oldest first

    def consent_states(self) -> dict[str, int]:
        """The current consent per channel: channel → index of its latest ledger row."""
        return {channel: index for index, (_, channel, _) in enumerate(self.consents)}


def epoch_datetime(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)


def day_date(day: int) -> dt.date:
    return dt.date.fromordinal(_EPOCH_ORDINAL + day)


_EPOCH_ORDINAL: Final = dt.date(1970, 1, 1).toordinal()


def _json_strings(items: Sequence[str]) -> str:
    # Tags and tokens are generated from fixed vocabularies: no quotes or backslashes to escape.
    return '["' + '", "'.join(items) + '"]' if items else "[]"


# --- the generator -----------------------------------------------------------------------------
class TenantDataGenerator:
    """Plan a tenant (stages, orders, events per contact) from ``seed``, then generate it block by block.

    ``events`` is the total to generate; each contact needs a few at least (a first page view, and a
    view, an add-to-cart and a purchase per order), so a tiny ``events`` is rounded up to that minimum
    (``events_total`` says how many there will be).
    """

    def __init__(
        self,
        *,
        contacts: int,
        events: int,
        seed: int,
        now: dt.datetime | None = None,
        rules: LifecycleRules | None = None,
        first_number: int = 1,
    ) -> None:
        if contacts < 0 or events < 0:
            raise ValueError("Counts cannot be negative.")
        now = now or dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
        if now.tzinfo is None:
            raise ValueError("now must be an aware datetime.")
        self.contacts = contacts
        self.seed = seed
        self.rules = rules or LifecycleRules()
        self.first_number = first_number
        self.now = int(now.timestamp())
        self.today = now.astimezone(dt.UTC).date()
        self.shop = Shop.build(random.Random(seed_text(seed, "shop")))  # noqa: S311 - reproducible, not secret
        self.stages, self.orders, self.event_counts = self._plan(contacts, events)
        self.events_total = sum(self.event_counts)

    # -- pass 1: who is what, and how active (cheap, sequential, kept in compact arrays) --
    def _plan(self, contacts: int, events: int) -> tuple[bytearray, array[int], array[int]]:
        r = random.Random(seed_text(self.seed, "plan"))  # noqa: S311 - reproducible, not secret
        rand, lognorm, expo = r.random, r.lognormvariate, r.expovariate
        rules = self.rules
        repeat_extra = max(0, rules.loyal_min_orders - 1 - rules.repeat_min_orders)
        loyal_base = max(rules.loyal_min_orders, rules.repeat_min_orders, 1)
        cum = list(Weighted(STAGES, STAGE_MIX).cum)
        stages = bytearray(contacts)
        orders = array("H", bytes(2 * contacts))
        minimum = array("I", bytes(4 * contacts))
        weights = array("d", bytes(8 * contacts))
        for i in range(contacts):
            stage = bisect.bisect_right(cum, rand())
            k = 0
            if stage == 2:
                k = 1
            elif stage == 3:
                k = max(1, rules.repeat_min_orders) + min(int(expo(0.9)), repeat_extra)
            elif stage == 4:
                k = loyal_base + min(int(expo(0.25)), 40)
            stages[i], orders[i] = stage, k
            minimum[i] = 1 + 3 * k
            weights[i] = min(lognorm(0.0, 1.0), 150.0) * STAGE_ACTIVITY[stage]
        # Share the events beyond the minimum by weight, rounding cumulatively so they add up exactly.
        extra = max(0, events - sum(minimum))
        total_weight = math.fsum(weights) or 1.0
        counts = array("I", bytes(4 * contacts))
        running, given = 0.0, 0
        for i in range(contacts):
            running += weights[i]
            target = extra if i == contacts - 1 else min(extra, int(running * extra / total_weight + 0.5))
            counts[i] = minimum[i] + target - given
            given = target
        return stages, orders, counts

    # -- pass 2: the contacts themselves --
    @property
    def blocks(self) -> int:
        return -(-self.contacts // BLOCK)

    def block(self, index: int) -> list[GeneratedContact]:
        """Contacts ``index * BLOCK`` onwards, from that block's own random stream."""
        r = random.Random(seed_text(self.seed, f"block:{index}"))  # noqa: S311 - reproducible, not secret
        start = index * BLOCK
        return [
            self._contact(r, i, self.stages[i], self.orders[i], self.event_counts[i])
            for i in range(start, min(start + BLOCK, self.contacts))
        ]

    def __iter__(self) -> Iterator[GeneratedContact]:
        for index in range(self.blocks):
            yield from self.block(index)

    def _contact(self, r: random.Random, i: int, stage_code: int, k: int, n: int) -> GeneratedContact:
        rand = r.random
        number = self.first_number + i
        rules = self.rules
        identified = stage_code > 0
        buyer = k > 0
        country: CountryProfile = COUNTRIES.pick(r)
        city: City = country.cities.pick(r)

        # Identity
        gender = GENDERS.pick(r) if identified else ""
        female = gender == "female" or (gender in ("", "diverse") and rand() < 0.5)
        first = (country.female if female else country.male).pick(r) if identified else ""
        last = country.last.pick(r) if identified else ""
        if female and country.code == "PL" and last.endswith(("ski", "cki", "dzki")):
            last = last[:-1] + "a"
        b2b = identified and rand() < 0.12
        company = company_name = ""
        if b2b:
            suffixes = country.company_suffixes
            if rand() < 0.5:
                company_name = country.last.pick(r)
                company = f"{company_name} {suffixes[int(rand() * len(suffixes))]}"
            else:
                company_name = COMPANY_WORDS.pick(r)
                company = f"{company_name} {COMPANY_SECTORS.pick(r)} {suffixes[0]}"
        email = ""
        if identified:
            f, l_ = email_slug(first), email_slug(last)
            style = rand()
            if style < 0.45:
                local = f"{f}.{l_}"
            elif style < 0.65:
                local = f"{f[:1]}{l_}"
            elif style < 0.8:
                local = f"{f}{l_}"
            elif style < 0.9:
                local = f"{f}_{l_}"
            else:
                local = f"{l_}.{f}"
            # The digits end the local part and the names have none, so the number alone makes it unique.
            domain = f"{email_slug(company_name)}.example" if b2b and rand() < 0.6 else country.domains.pick(r)
            email = f"{local}{number}@{domain}"
        external_id = f"CUS-{number:07d}" if buyer or (identified and rand() < 0.8) else ""
        # Shaped like a UUID (version 4); the last group is the number, so it is unique too.
        hi = r.getrandbits(80)
        anonymous_id = (
            f"{hi >> 48:08x}-{(hi >> 32) & 0xFFFF:04x}-4{(hi >> 20) & 0xFFF:03x}-"
            f"{0x8000 | (hi & 0x3FFF):04x}-{number:012x}"
        )
        phone = ""
        if identified and rand() < (0.55 if buyer else 0.35):
            phone = fill_pattern(r, country.phones[int(rand() * len(country.phones))])
        has_app = rand() < (0.3 if buyer else 0.15 if identified else 0.04)
        push_tokens = [f"{r.getrandbits(256):064x}"] if has_app else []
        if has_app and rand() < 0.15:
            push_tokens.append(f"{r.getrandbits(256):064x}")

        # Demographics and geography
        birth_date = None
        if rand() < (0.7 if identified else 0.03):
            age = int(r.triangular(18, 85, 31))
            birth_date = dt.date.fromordinal(self.today.toordinal() - int(age * 365.25) - int(rand() * 365))
        income_band = INCOME_BANDS.pick(r) if identified and rand() < 0.35 else ""
        education = EDUCATION.pick(r) if identified and rand() < 0.3 else ""
        job_role = (B2B_ROLES if b2b else JOB_ROLES).pick(r) if b2b or (identified and rand() < 0.4) else ""
        postal_code = fill_pattern(r, city.postal_pattern) if identified and rand() < 0.8 else ""
        locale = country.locales.pick(r)
        industry = INDUSTRIES.pick(r) if b2b else ""
        company_size = COMPANY_SIZES.pick(r) if b2b else ""
        buying_stage = (CUSTOMER_BUYING_STAGES if buyer else LEAD_BUYING_STAGES).pick(r) if b2b else ""

        # Psychographics: more is known about people who buy
        known = 0.85 if buyer else 0.6 if identified else 0.25
        interests = INTERESTS.pick_many(r, 1 + int(rand() * 4)) if rand() < known else []
        values = VALUES.pick_many(r, 1 + int(rand() * 2)) if rand() < known * 0.6 else []
        lifestyle = LIFESTYLES.pick_many(r, 1 + int(rand() * 2)) if rand() < known * 0.6 else []
        attitudes = ATTITUDES.pick_many(r, 1 + int(rand() * 2)) if rand() < known * 0.5 else []
        favourite = self.shop.categories.pick(r)
        for index, (_, _, _, signals) in enumerate(CATEGORIES):
            if any(tag in signals for tag in interests):
                favourite = index
                break

        # The timeline
        now = self.now
        end = now - END_MARGIN
        first_seen = end - int(rand() * (HISTORY_DAYS * DAY - END_MARGIN))
        # How much of the time since the first visit they stayed active: heavy users to the end.
        frac = 1.0 - (1.0 - math.sqrt(rand())) * (0.3 if n > 20 else 1.0)
        if n <= 1 + 3 * k:  # no events beyond the first visit and the orders
            frac = rand() if k else 0.0
        last_active = first_seen + int((end - first_seen) * frac)
        span = last_active - first_seen
        identified_at = first_seen
        if identified and rand() >= 0.4:  # 40 % sign up on their first visit
            identified_at = first_seen + int(span * rand() * 0.5)

        # Consent (purpose "marketing"), from the moment they are known
        consents: list[ConsentRow] = []
        email_window: tuple[int, int] | None = None
        if email:
            u = rand()
            if u < 0.06:
                consents.append((identified_at, "email", ConsentStatus.PENDING.value))
            elif u >= 0.16:
                granted = identified_at
                if rand() < 0.3:  # double opt-in: pending until the link is clicked
                    consents.append((identified_at, "email", ConsentStatus.PENDING.value))
                    granted = min(end, identified_at + 60 + int(rand() * 2 * DAY))
                consents.append((granted, "email", ConsentStatus.GRANTED.value))
                closes = end
                if u < 0.30:
                    closes = granted + 1 + int((end - granted) * rand())
                    consents.append((closes, "email", ConsentStatus.WITHDRAWN.value))
                email_window = (granted, closes)
        for channel, present, granted_share, withdrawn_share in (
            ("sms", bool(phone), 0.45, 0.10),
            ("push", identified and has_app, 0.65, 0.10),
        ):
            if not present:
                continue
            u = rand()
            if u < granted_share + withdrawn_share:
                at = identified_at + int((end - identified_at) * rand() * 0.3)
                consents.append((at, channel, ConsentStatus.GRANTED.value))
                if u < withdrawn_share:
                    consents.append((at + 1 + int((end - at) * rand()), channel, ConsentStatus.WITHDRAWN.value))
        consents.sort(key=_first)

        # Events
        shop = self.shop
        products, fav_products = shop.products, shop.by_category[favourite]
        pages, fav_pages = shop.pages, shop.category_pages[favourite]
        web_or_app = ("web", "app") if has_app else ("web", "web")
        events: list[EventRow] = [(first_seen, "page_view", None, pages.pick(r), "web")]
        add = events.append

        purchases: list[tuple[int, Product, int, int]] = []
        if k:
            shop_span = last_active - identified_at
            for t in sorted(identified_at + int(shop_span * rand()) for _ in range(k)):
                product = (fav_products if rand() < 0.7 else products).pick(r)
                items = 1 + (rand() < 0.3) + (rand() < 0.1)
                purchases.append((t, product, items, product.price_cents * items))
            revenue = sum(p[3] for p in purchases)
            if k >= rules.loyal_min_orders and stage_code == 4 and revenue < rules.loyal_min_revenue_cents:
                top_up = (rules.loyal_min_revenue_cents - revenue) // k + 1
                purchases = [(t, p, items, cents + top_up) for t, p, items, cents in purchases]
        for j, (t, product, items, cents) in enumerate(purchases):
            src = web_or_app[rand() < 0.4]
            add((t, "page_view", None, product.page, src))
            t += 30 + int(rand() * 570)
            add((t, "add_to_cart", None, product.cart, src))
            t += 60 + int(rand() * 840)
            order = f'"order_id": "ORD-{number}-{j + 1}", "sku": "{product.sku}", "items": {items}'
            add((t, "purchase", cents, f'{{"category": "{CATEGORIES[product.category][0]}", {order}}}', src))

        budget = n - 1 - 3 * k
        last_engaged: int | None = None
        if email_window is not None and budget > 0:
            opens = int(budget * (0.1 + 0.3 * rand()))
            clicks = int(opens * (0.1 + 0.3 * rand()))
            budget -= opens + clicks
            start, width = email_window[0], email_window[1] - email_window[0]
            campaigns = shop.campaigns
            for j in range(opens):
                t = start + int(width * rand())
                opened, clicked = campaigns.pick(r)
                add((t, "email_open", None, opened, "email"))
                if j < clicks:
                    t += 20 + int(rand() * 900)
                    add((t, "email_click", None, clicked, "email"))
                if last_engaged is None or t > last_engaged:
                    last_engaged = t
        if budget > 1:
            carts = int(budget * (0.05 + 0.25 * rand()) / 2)  # most carts are abandoned
            budget -= 2 * carts
            for _ in range(carts):
                t = first_seen + int(span * rand())
                product = (fav_products if rand() < 0.6 else products).pick(r)
                src = web_or_app[rand() < 0.4]
                add((t, "add_to_cart", None, product.cart, src))
                add((t + 1800 + int(rand() * 1800), "cart_abandoned", None, product.abandoned, src))
        fav_page_items, fav_page_cum, page_items, page_cum = fav_pages.items, fav_pages.cum, pages.items, pages.cum
        bisect_right = bisect.bisect_right
        while budget > 0:  # browsing sessions of a few page views each
            t = first_seen + int(span * rand())
            length = min(budget, 12, 1 + int(r.expovariate(0.5)))
            budget -= length
            src = web_or_app[rand() < 0.4]
            for _ in range(length):
                if rand() < 0.5:
                    add((t, "page_view", None, fav_page_items[bisect_right(fav_page_cum, rand())], src))
                else:
                    add((t, "page_view", None, page_items[bisect_right(page_cum, rand())], src))
                t += 15 + int(rand() * 225)
        events.sort(key=_first)

        # Summaries and rollups, from the events themselves
        daily: dict[tuple[int, str], list[int]] = {}
        for t, name, cents_or_none, _, _ in events:
            key = (t // DAY, name)
            cell = daily.get(key)
            if cell is None:
                daily[key] = [1, cents_or_none or 0]
            else:
                cell[0] += 1
                if cents_or_none:
                    cell[1] += cents_or_none
        rollups = [(day, name, count, cents) for (day, name), (count, cents) in daily.items()]
        # Purchases in the order they happened (sessions can overlap), with their own revenue.
        paid = [(e[0], e[2] or 0) for e in events if e[1] == "purchase"]
        total_revenue = sum(cents for _, cents in paid)

        # The stage history
        transitions: list[TransitionRow] = []
        if identified and identified_at == first_seen:
            transitions.append((first_seen, "", LEAD, "first seen"))
        else:
            transitions.append((first_seen, "", NEW_VISITOR, "first seen"))
            if identified:
                transitions.append((identified_at, NEW_VISITOR, LEAD, "profile updated"))
        stage, revenue_so_far = transitions[-1][2], 0
        for orders_so_far, (t, cents) in enumerate(paid, start=1):
            revenue_so_far += cents
            new_stage = rules.stage(orders=orders_so_far, revenue_cents=revenue_so_far, identified=True)
            if new_stage != stage:
                transitions.append((t, stage, new_stage, "events"))
                stage = new_stage
        changed_at = transitions[-1][0]

        attributes: dict[str, Any] = {}
        if identified:
            attributes = {
                "plan": PLANS_BY_STAGE[stage_code].pick(r),
                "signup_source": SIGNUP_SOURCES.pick(r),
                "signup_date": epoch_datetime(identified_at).date().isoformat(),
            }
            if buyer:
                attributes["loyalty_points"] = total_revenue // 100
            if has_app:
                attributes["app_user"] = True

        last_seen = events[-1][0]
        return GeneratedContact(
            number=number,
            external_id=external_id,
            anonymous_id=anonymous_id,
            email=email,
            phone=phone,
            push_tokens=push_tokens,
            first_name=first,
            last_name=last,
            locale=locale,
            time_zone=city.time_zone,
            birth_date=birth_date,
            gender=gender,
            income_band=income_band,
            education=education,
            job_role=job_role,
            country=country.code,
            region=city.region,
            city=city.name,
            postal_code=postal_code,
            company=company,
            industry=industry,
            company_size=company_size,
            buying_stage=buying_stage,
            interests=interests,
            values=values,
            lifestyle=lifestyle,
            attitudes=attitudes,
            attributes=attributes,
            lifecycle_stage=stage,
            lifecycle_changed_at=changed_at,
            first_seen_at=first_seen,
            last_seen_at=last_seen,
            last_engaged_at=last_engaged,
            order_count=k,
            total_revenue_cents=total_revenue,
            last_order_at=paid[-1][0] if paid else None,
            created_at=first_seen,
            updated_at=max(last_seen, changed_at, consents[-1][0] if consents else 0),
            events=events,
            rollups=rollups,
            consents=consents,
            transitions=transitions,
        )


_first = itemgetter(0)


def seed_text(seed: int, stream: str) -> str:
    # random.Random hashes a str seed with SHA-512: stable across runs and processes.
    return f"{seed}:{stream}"


# --- shared by both loaders ---------------------------------------------------------------------
@dataclass(frozen=True)
class LoadReport:
    """What a load wrote: rows per table and the wall time.

    For COPY loads, ``copy_seconds`` is the time the server spent putting each table's rows in
    place (COPY into staging plus INSERT ... SELECT), ``staging_seconds`` the COPY part alone.
    """

    tenant_id: int
    rows: dict[str, int]
    seconds: float
    copy_seconds: dict[str, float] = field(default_factory=dict)
    first_number: int = 1
    staging_seconds: dict[str, float] = field(default_factory=dict)

    def rate(self, table: str) -> float:
        """Rows per second the server took to load ``table`` (COPY into staging + INSERT)."""
        seconds = self.copy_seconds.get(table, 0.0)
        return self.rows.get(table, 0) / seconds if seconds else 0.0


def define_attributes(tenant: Tenant) -> None:
    """Create the custom attribute definitions the generated contacts use (current tenant)."""
    for key, label, kind in ATTRIBUTE_DEFINITIONS:
        AttributeDefinition.objects.get_or_create(tenant=tenant, key=key, defaults={"label": label, "type": kind})


def next_contact_number(tenant: Tenant) -> int:
    """The first contact number that cannot collide with an earlier load into this tenant.

    Numbers of earlier loads never exceed the ids their contacts got, so starting after the
    highest id is safe.
    """
    from django.db.models import Max

    highest = Contact.objects.filter(tenant=tenant).aggregate(m=Max("id"))["m"]
    return int(highest or 0) + 1


def _batched(items: Iterator[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _money(cents: int) -> Decimal:
    return Decimal(cents).scaleb(-2)


# --- the ORM loader ---------------------------------------------------------------------------
def load_with_orm(
    tenant: Tenant,
    *,
    contacts: int = 2_000,
    events: int | None = None,
    seed: int = 1,
    now: dt.datetime | None = None,
    batch_size: int = 500,
) -> LoadReport:
    """Generate ``contacts`` (and ``events``, 10 per contact by default) into ``tenant`` with bulk_create.

    Works on every database; for millions of rows on PostgreSQL use ``load_with_copy``.
    """
    from django.db import transaction

    started = time.perf_counter()
    rows: Counter[str] = Counter()
    with tenant_context(tenant.id), transaction.atomic():
        define_attributes(tenant)
        first_number = next_contact_number(tenant)
        generator = TenantDataGenerator(
            contacts=contacts,
            events=contacts * 10 if events is None else events,
            seed=seed,
            now=now,
            rules=LifecycleRules.for_tenant(tenant),
            first_number=first_number,
        )
        for batch in _batched(iter(generator), batch_size):
            _orm_batch(tenant, batch, rows)
    return LoadReport(tenant.id, dict(rows), time.perf_counter() - started, first_number=first_number)


def _orm_batch(tenant: Tenant, batch: list[GeneratedContact], rows: Counter[str]) -> None:
    from django.db import connection
    from django.db.models import F

    when = epoch_datetime
    contacts = [
        Contact(
            tenant=tenant,
            external_id=c.external_id,
            anonymous_id=c.anonymous_id,
            email=c.email,
            phone=c.phone,
            push_tokens=c.push_tokens,
            first_name=c.first_name,
            last_name=c.last_name,
            locale=c.locale,
            time_zone=c.time_zone,
            birth_date=c.birth_date,
            gender=c.gender,
            income_band=c.income_band,
            education=c.education,
            job_role=c.job_role,
            country=c.country,
            region=c.region,
            city=c.city,
            postal_code=c.postal_code,
            company=c.company,
            industry=c.industry,
            company_size=c.company_size,
            buying_stage=c.buying_stage,
            interests=c.interests,
            values=c.values,
            lifestyle=c.lifestyle,
            attitudes=c.attitudes,
            attributes=c.attributes,
            lifecycle_stage=c.lifecycle_stage,
            lifecycle_changed_at=when(c.lifecycle_changed_at),
            first_seen_at=when(c.first_seen_at),
            last_seen_at=when(c.last_seen_at),
            last_engaged_at=None if c.last_engaged_at is None else when(c.last_engaged_at),
            order_count=c.order_count,
            total_revenue=_money(c.total_revenue_cents),
            last_order_at=None if c.last_order_at is None else when(c.last_order_at),
        )
        for c in batch
    ]
    Contact.objects.bulk_create(contacts)
    if contacts and contacts[0].pk is None:  # SQLite before 3.35 returns no ids: find them again
        ids_by_anonymous_id = dict(
            Contact.objects.filter(tenant=tenant, anonymous_id__in=[c.anonymous_id for c in batch]).values_list(
                "anonymous_id", "pk"
            )
        )
        for model in contacts:
            model.pk = ids_by_anonymous_id[model.anonymous_id]
    # bulk_create stamps auto_now(_add) fields with the wall clock; bulk_update leaves them as given.
    for model, c in zip(contacts, batch, strict=True):
        model.created_at, model.updated_at = when(c.created_at), when(c.updated_at)
    Contact.objects.bulk_update(contacts, ["created_at", "updated_at"])
    ids = [model.pk for model in contacts]

    events = [
        Event(
            tenant=tenant,
            contact_id=contact_id,
            name=name,
            occurred_at=when(t),
            properties=json.loads(props),
            revenue=None if cents is None else _money(cents),
            currency="" if cents is None else CURRENCY,
            source=source,
        )
        for contact_id, c in zip(ids, batch, strict=True)
        for t, name, cents, props, source in c.events
    ]
    Event.objects.bulk_create(events, batch_size=2_000)
    Event.objects.filter(tenant=tenant, contact_id__in=ids).update(received_at=F("occurred_at"))
    EventDailyRollup.objects.bulk_create(
        [
            EventDailyRollup(
                tenant=tenant, contact_id=contact_id, name=name, day=day_date(day), count=count, revenue=_money(cents)
            )
            for contact_id, c in zip(ids, batch, strict=True)
            for day, name, count, cents in c.rollups
        ],
        batch_size=2_000,
    )
    records = [
        [
            ConsentRecord(
                tenant=tenant,
                contact_id=contact_id,
                channel=channel,
                purpose=PURPOSE,
                status=status,
                legal_basis=LegalBasis.CONSENT,
                source=ConsentSource.IMPORT,
                wording=WORDING[channel],
                wording_version=WORDING_VERSION,
                actor=CONSENT_ACTOR,
                occurred_at=when(t),
            )
            for t, channel, status in c.consents
        ]
        for contact_id, c in zip(ids, batch, strict=True)
    ]
    flat_records = [r for ledger in records for r in ledger]
    if connection.features.can_return_rows_from_bulk_insert:
        ConsentRecord.objects.bulk_create(flat_records, batch_size=2_000)
    else:  # SQLite before 3.35: the states need the records' ids
        for record in flat_records:
            record.save(force_insert=True)
    ConsentState.objects.bulk_create(
        [
            ConsentState(
                tenant=tenant,
                contact_id=contact_id,
                channel=channel,
                purpose=PURPOSE,
                status=ledger[index].status,
                record=ledger[index],
                updated_at=ledger[index].occurred_at,
            )
            for contact_id, c, ledger in zip(ids, batch, records, strict=True)
            for channel, index in c.consent_states().items()
        ],
        batch_size=2_000,
    )
    LifecycleTransition.objects.bulk_create(
        [
            LifecycleTransition(
                tenant=tenant,
                contact_id=contact_id,
                from_stage=from_stage,
                to_stage=to_stage,
                reason=reason,
                occurred_at=when(t),
            )
            for contact_id, c in zip(ids, batch, strict=True)
            for t, from_stage, to_stage, reason in c.transitions
        ],
        batch_size=2_000,
    )
    rows["contacts"] += len(batch)
    rows["events"] += len(events)
    rows["rollups"] += sum(len(c.rollups) for c in batch)
    rows["consent_records"] += sum(len(c.consents) for c in batch)
    rows["consent_states"] += sum(len(c.consent_states()) for c in batch)
    rows["lifecycle_transitions"] += sum(len(c.transitions) for c in batch)


# --- the COPY loader ------------------------------------------------------------------------------
# Tables in load order (references first), the model and the columns this module fills.
COPY_TABLES: Final[tuple[tuple[str, type[models.Model], tuple[str, ...]], ...]] = (
    (
        "contacts",
        Contact,
        (
            "id", "tenant_id", "external_id", "anonymous_id", "email", "phone", "push_tokens", "first_name",
            "last_name", "locale", "time_zone", "birth_date", "gender", "income_band", "education", "job_role",
            "country", "region", "city", "postal_code", "company", "industry", "company_size", "buying_stage",
            "interests", "values", "lifestyle", "attitudes", "attributes", "lifecycle_stage",
            "lifecycle_changed_at", "first_seen_at", "last_seen_at", "last_engaged_at", "order_count",
            "total_revenue", "last_order_at", "erased_at", "created_at", "updated_at",
        ),
    ),
    (
        "events",
        Event,
        ("tenant_id", "contact_id", "name", "occurred_at", "properties", "revenue", "currency", "source",
         "idempotency_key", "received_at"),
    ),
    ("rollups", EventDailyRollup, ("tenant_id", "contact_id", "name", "day", "count", "revenue")),
    (
        "consent_records",
        ConsentRecord,
        ("id", "tenant_id", "contact_id", "channel", "purpose", "status", "legal_basis", "source", "wording",
         "wording_version", "ip_address", "user_agent", "actor", "occurred_at"),
    ),
    (
        "consent_states",
        ConsentState,
        ("tenant_id", "contact_id", "channel", "purpose", "status", "record_id", "updated_at"),
    ),
    (
        "lifecycle_transitions",
        LifecycleTransition,
        ("tenant_id", "contact_id", "from_stage", "to_stage", "reason", "occurred_at"),
    ),
)  # fmt: skip
WORKER_TIMEOUT: Final = 600.0


@dataclass(frozen=True)
class CopyLayout:
    """How one table is loaded: COPY into a staging table, then INSERT ... SELECT into the table.

    PostgreSQL refuses ``COPY FROM`` into a table under row-level security (unless the role
    bypasses it), so every chunk goes through a temporary table of the same columns; the
    INSERT then passes the tenant policy's WITH CHECK row by row. ``suffix`` is the COPY text of
    columns that other code added after this module was written.
    """

    table: str
    stage: str
    suffix: str
    create_stage: str
    copy: str
    insert: str
    truncate: str
    drop_stage: str


def copy_layouts(quote: Callable[[str], str]) -> dict[str, CopyLayout]:
    """Statements for every table; fail early if the schema dropped a column we fill.

    Columns that other code added later are filled with their model default, or left to the
    database when they are nullable or have a database default.
    """
    from django.db.models import NOT_PROVIDED

    layouts = {}
    for label, model, columns in COPY_TABLES:
        table = model._meta.db_table
        fields = {f.column: f for f in model._meta.concrete_fields}
        missing = [c for c in columns if c not in fields]
        if missing:
            raise RuntimeError(f"{table} has no column(s) {missing}: update contacts/generator.py.")
        extra, texts = [], []
        for column, f in fields.items():
            if column in columns or f.primary_key or f.null or f.db_default is not NOT_PROVIDED:
                continue
            if not f.has_default():
                raise RuntimeError(f"{table}.{column} needs a value: update contacts/generator.py.")
            extra.append(column)
            texts.append(_copy_value(f.get_default()))
        names = ", ".join(quote(c) for c in (*columns, *extra))
        stage = "pg_temp." + quote(f"generator_stage_{label}")  # never a real table of the same name
        layouts[label] = CopyLayout(
            table=table,
            stage=stage,
            suffix="".join("\t" + t for t in texts),
            # Same column types, no constraints, no policy; gone at commit or rollback at the latest.
            create_stage=(
                f"CREATE TEMPORARY TABLE {stage} ON COMMIT DROP AS SELECT {names} FROM {quote(table)} WITH NO DATA"
            ),
            copy=f"COPY {stage} ({names}) FROM STDIN",
            insert=f"INSERT INTO {quote(table)} ({names}) SELECT {names} FROM {stage}",
            truncate=f"TRUNCATE {stage}",
            drop_stage=f"DROP TABLE IF EXISTS {stage}",
        )
    return layouts


def _copy_value(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, dict | list):
        value = json.dumps(value)
    text = str(value)
    for raw, escaped in (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r")):
        text = text.replace(raw, escaped)
    return text


class _Clock:
    """Timestamps as COPY text, from tables: formatting ten million of them must be cheap."""

    def __init__(self) -> None:
        self.hms = [f"{h:02d}:{m:02d}:{s:02d}+00" for h in range(24) for m in range(60) for s in range(60)]
        self.days: dict[int, str] = {}

    def day(self, day: int) -> str:
        text = self.days.get(day)
        if text is None:
            text = self.days[day] = day_date(day).isoformat()
        return text

    def stamp(self, seconds: int) -> str:
        day, rest = divmod(seconds, DAY)
        text = self.days.get(day)
        if text is None:
            text = self.day(day)
        return f"{text} {self.hms[rest]}"


def format_chunk(
    contacts: list[GeneratedContact],
    contact_ids: Sequence[int],
    record_ids: Sequence[int],
    tenant_id: int,
    layouts: dict[str, CopyLayout],
    clock: _Clock,
) -> tuple[list[tuple[str, bytes]], dict[str, int]]:
    """Render one chunk as COPY text per table; return it with the row counts."""
    stamp, day_text, days, hms = clock.stamp, clock.day, clock.days, clock.hms
    tid = str(tenant_id)
    null = "\\N"
    out: dict[str, list[str]] = {label: [] for label, _, _ in COPY_TABLES}
    contact_lines, event_lines, rollup_lines = out["contacts"], out["events"], out["rollups"]
    record_lines, state_lines = out["consent_records"], out["consent_states"]
    transition_lines = out["lifecycle_transitions"]
    ends = {label: layout.suffix + "\n" for label, layout in layouts.items()}
    contact_end, event_end, rollup_end = ends["contacts"], ends["events"], ends["rollups"]
    record_end, state_end, transition_end = (
        ends["consent_records"],
        ends["consent_states"],
        ends["lifecycle_transitions"],
    )
    next_record = 0
    for c, cid in zip(contacts, contact_ids, strict=True):
        birth = c.birth_date.isoformat() if c.birth_date else null
        engaged = null if c.last_engaged_at is None else stamp(c.last_engaged_at)
        ordered = null if c.last_order_at is None else stamp(c.last_order_at)
        attributes = json.dumps(c.attributes, ensure_ascii=False)
        contact_lines.append(
            f"{cid}\t{tid}\t{c.external_id}\t{c.anonymous_id}\t{c.email}\t{c.phone}\t{_json_strings(c.push_tokens)}\t"
            f"{c.first_name}\t{c.last_name}\t{c.locale}\t{c.time_zone}\t{birth}\t{c.gender}\t{c.income_band}\t"
            f"{c.education}\t{c.job_role}\t{c.country}\t{c.region}\t{c.city}\t{c.postal_code}\t{c.company}\t"
            f"{c.industry}\t{c.company_size}\t{c.buying_stage}\t{_json_strings(c.interests)}\t"
            f"{_json_strings(c.values)}\t{_json_strings(c.lifestyle)}\t{_json_strings(c.attitudes)}\t{attributes}\t"
            f"{c.lifecycle_stage}\t{stamp(c.lifecycle_changed_at)}\t{stamp(c.first_seen_at)}\t"
            f"{stamp(c.last_seen_at)}\t{engaged}\t{c.order_count}\t{_euros(c.total_revenue_cents)}\t{ordered}\t"
            f"{null}\t{stamp(c.created_at)}\t{stamp(c.updated_at)}{contact_end}"
        )
        head = f"{tid}\t{cid}\t"
        for t, name, cents, props, source in c.events:
            day, rest = divmod(t, DAY)
            at = f"{days.get(day) or day_text(day)} {hms[rest]}"
            if cents is None:
                event_lines.append(f"{head}{name}\t{at}\t{props}\t\\N\t\t{source}\t\t{at}{event_end}")
            else:
                event_lines.append(
                    f"{head}{name}\t{at}\t{props}\t{cents // 100}.{cents % 100:02d}\t{CURRENCY}\t{source}\t\t{at}"
                    f"{event_end}"
                )
        for day, name, count, cents in c.rollups:
            rollup_lines.append(f"{head}{name}\t{day_text(day)}\t{count}\t{cents // 100}.{cents % 100:02d}{rollup_end}")
        if c.consents:
            first_record = next_record
            for t, channel, status in c.consents:
                record_lines.append(
                    f"{record_ids[next_record]}\t{head}{channel}\t{PURPOSE}\t{status}\tconsent\timport\t"
                    f"{WORDING[channel]}\t{WORDING_VERSION}\t\\N\t\t{CONSENT_ACTOR}\t{stamp(t)}{record_end}"
                )
                next_record += 1
            for channel, index in c.consent_states().items():
                t, _, status = c.consents[index]
                state_lines.append(
                    f"{head}{channel}\t{PURPOSE}\t{status}\t{record_ids[first_record + index]}\t{stamp(t)}{state_end}"
                )
        for t, from_stage, to_stage, reason in c.transitions:
            transition_lines.append(f"{head}{from_stage}\t{to_stage}\t{reason}\t{stamp(t)}{transition_end}")
    payload = [(label, "".join(lines).encode()) for label, lines in out.items() if lines]
    return payload, {label: len(lines) for label, lines in out.items()}


def _reserve(cursor: Any, sequence: str, count: int) -> list[int]:
    """Take ``count`` ids from ``sequence`` (nextval never hands them to anyone else)."""
    if not count:
        return []
    cursor.execute("SELECT nextval(%s::regclass) FROM generate_series(1, %s)", [sequence, count])
    return sorted(row[0] for row in cursor.fetchall())


@dataclass(frozen=True)
class _CopyJob:
    """What a worker needs to render chunks (inherited by the forked worker, never pickled)."""

    generator: TenantDataGenerator
    tenant_id: int
    layouts: dict[str, CopyLayout]
    connect_params: dict[str, Any]
    contact_sequence: str
    record_sequence: str
    chunk_blocks: int

    @property
    def chunks(self) -> int:
        return -(-self.generator.blocks // self.chunk_blocks)

    def render(self, chunk: int, cursor: Any, clock: _Clock) -> tuple[list[tuple[str, bytes]], dict[str, int]]:
        first = chunk * self.chunk_blocks
        contacts = [
            c
            for b in range(first, min(first + self.chunk_blocks, self.generator.blocks))
            for c in self.generator.block(b)
        ]
        contact_ids = _reserve(cursor, self.contact_sequence, len(contacts))
        record_ids = _reserve(cursor, self.record_sequence, sum(len(c.consents) for c in contacts))
        return format_chunk(contacts, contact_ids, record_ids, self.tenant_id, self.layouts, clock)


def _copy_worker(job: _CopyJob, worker: int, workers: int, out: Any) -> None:
    """Render every ``workers``-th chunk and queue it; on failure queue the traceback instead."""
    import psycopg

    try:
        clock = _Clock()
        # A connection of its own, outside the loader's transaction: only for nextval.
        with psycopg.connect(**job.connect_params, autocommit=True) as conn, conn.cursor() as cursor:
            for chunk in range(worker, job.chunks, workers):
                out.put(job.render(chunk, cursor, clock))
    except BaseException:  # noqa: BLE001 - any failure must reach the parent, which re-raises it
        out.put(traceback.format_exc())
    finally:
        out.close()
        out.join_thread()


def load_with_copy(
    tenant: Tenant,
    *,
    contacts: int = 1_000_000,
    events: int = 10_000_000,
    seed: int = 1,
    now: dt.datetime | None = None,
    chunk_blocks: int = 5,
    workers: int = 1,
    connections: int = 1,
    analyze: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> LoadReport:
    """Stream a generated tenant into PostgreSQL with COPY, in chunks of ``chunk_blocks * BLOCK`` contacts.

    By default in one transaction (all or nothing, and usable inside the caller's): ``workers``
    forked processes generate and render the chunks while this process feeds the previous ones to
    the server, so generator and server work in parallel and memory stays bounded (``workers=0``:
    render here, no fork). The server is usually the bottleneck, and one connection uses one core:
    ``connections=N`` instead forks N processes that each generate and load their share in a
    transaction of their own and commit together at the end (all commit, or all roll back); that
    needs a committed tenant, so it refuses to run inside a transaction.

    Row-level security stays on: every transaction is scoped to ``tenant``, and since PostgreSQL
    has no COPY into a table under a policy, each chunk is copied into a temporary staging table
    and moved with INSERT ... SELECT, which checks the policy for every row.
    """
    from django.db import connection, transaction

    if connection.vendor != "postgresql":
        raise RuntimeError("load_with_copy needs PostgreSQL; use load_with_orm on other databases.")
    if connections > 1 and connection.in_atomic_block:
        raise RuntimeError("connections > 1 commits in connections of its own: call it outside a transaction.")
    started = time.perf_counter()
    tally = _Tally()
    if connections > 1:
        with tenant_context(tenant.id):
            job = _copy_job(tenant, contacts, events, seed, now, chunk_blocks)
        _load_in_parallel(job, connections, tally, progress)
    else:
        with tenant_context(tenant.id), transaction.atomic():
            job = _copy_job(tenant, contacts, events, seed, now, chunk_blocks)
            with connection.cursor() as cursor:
                # The backend has scoped this transaction to the tenant already; COPY and the
                # INSERTs go through the raw psycopg connection, so say it explicitly too.
                _begin_load(cursor, job)
            with connection.connection.cursor() as copy_cursor:
                for payload, counts in _rendered_chunks(job, workers):
                    tally.add(counts, *_load_chunk(copy_cursor, job.layouts, payload))
                    if progress is not None:
                        progress(tally.rows["contacts"], contacts)
            with connection.cursor() as cursor:
                for layout in job.layouts.values():
                    cursor.execute(layout.drop_stage)
                cursor.execute("SET CONSTRAINTS ALL DEFERRED")
    if analyze:
        began = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE " + ", ".join(connection.ops.quote_name(lt.table) for lt in job.layouts.values()))
        tally.copy_seconds["analyze"] = time.perf_counter() - began
    return LoadReport(
        tenant.id,
        dict(tally.rows),
        time.perf_counter() - started,
        dict(tally.copy_seconds),
        job.generator.first_number,
        dict(tally.staging_seconds),
    )


@dataclass
class _Tally:
    rows: Counter[str] = field(default_factory=Counter)
    copy_seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    staging_seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, counts: dict[str, int], copy_seconds: dict[str, float], staging_seconds: dict[str, float]) -> None:
        self.rows.update(counts)
        for label, seconds in copy_seconds.items():
            self.copy_seconds[label] += seconds
        for label, seconds in staging_seconds.items():
            self.staging_seconds[label] += seconds


def _copy_job(
    tenant: Tenant, contacts: int, events: int, seed: int, now: dt.datetime | None, chunk_blocks: int
) -> _CopyJob:
    """Define the attributes, number the contacts and plan the load (current tenant)."""
    from django.db import connection

    define_attributes(tenant)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_serial_sequence(%s, 'id'), pg_get_serial_sequence(%s, 'id')",
            [Contact._meta.db_table, ConsentRecord._meta.db_table],
        )
        contact_sequence, record_sequence = cursor.fetchone()
    return _CopyJob(
        generator=TenantDataGenerator(
            contacts=contacts,
            events=events,
            seed=seed,
            now=now,
            rules=LifecycleRules.for_tenant(tenant),
            first_number=next_contact_number(tenant),
        ),
        tenant_id=tenant.id,
        layouts=copy_layouts(connection.ops.quote_name),
        connect_params=connection.get_connection_params(),
        contact_sequence=contact_sequence,
        record_sequence=record_sequence,
        chunk_blocks=max(1, chunk_blocks),
    )


def _begin_load(cursor: Any, job: _CopyJob) -> None:
    """Scope the open transaction to the tenant and create its staging tables."""
    cursor.execute("SELECT set_config('app.tenant_id', %s, true)", [str(job.tenant_id)])
    # Check foreign keys per statement, not all at commit: keeps the trigger queue small.
    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    for layout in job.layouts.values():
        cursor.execute(layout.drop_stage)
        cursor.execute(layout.create_stage)


def _load_chunk(
    cursor: Any, layouts: dict[str, CopyLayout], payload: list[tuple[str, bytes]]
) -> tuple[dict[str, float], dict[str, float]]:
    """COPY each table's rows into its staging table and INSERT them; return the seconds spent."""
    copy_seconds: dict[str, float] = {}
    staging_seconds: dict[str, float] = {}
    for label, data in payload:
        layout = layouts[label]
        began = time.perf_counter()
        with cursor.copy(layout.copy) as copy:
            copy.write(data)
        staged = time.perf_counter()
        cursor.execute(layout.insert)
        cursor.execute(layout.truncate)
        staging_seconds[label] = staged - began
        copy_seconds[label] = time.perf_counter() - began
    return copy_seconds, staging_seconds


def _load_in_parallel(
    job: _CopyJob, connections: int, tally: _Tally, progress: Callable[[int, int], None] | None
) -> None:
    """Run ``connections`` loader processes; commit all of them, or roll all of them back."""
    context = multiprocessing.get_context("fork")
    reports = context.Queue()
    verdicts = [context.Queue() for _ in range(connections)]
    processes = [
        context.Process(target=_parallel_loader, args=(job, w, connections, reports, verdicts[w]), daemon=True)
        for w in range(connections)
    ]
    for process in processes:
        process.start()
    failure: str | None = None
    try:
        ready = 0
        while ready < connections and failure is None:
            message = _receive(reports, processes)
            if message[0] == "chunk":
                tally.add(*message[1:])
                if progress is not None:
                    progress(tally.rows["contacts"], job.generator.contacts)
            elif message[0] == "ready":
                ready += 1
            else:
                failure = message[1]
        for verdict in verdicts:
            verdict.put("commit" if failure is None else "rollback")
        committed = 0
        while failure is None and committed < connections:
            message = _receive(reports, processes)
            if message[0] == "committed":
                committed += 1
            else:
                failure = f"{message[1]}\n(Loaders that committed before this failure keep their rows.)"
    finally:
        for process in processes:
            process.join(WORKER_TIMEOUT if failure is None else 5)
            if process.is_alive():
                process.terminate()
    if failure is not None:
        raise RuntimeError(f"A loader process failed:\n{failure}")


def _receive(reports: Any, processes: Sequence[Any]) -> tuple[Any, ...]:
    waited = 0.0
    while True:
        try:
            message: tuple[Any, ...] = reports.get(timeout=1.0)
            return message
        except queue.Empty:
            waited += 1.0
            if any(p.exitcode not in (None, 0) for p in processes) or waited > WORKER_TIMEOUT:
                return ("failed", "A loader process stopped without reporting.")


def _parallel_loader(job: _CopyJob, worker: int, workers: int, reports: Any, verdict: Any) -> None:
    """Generate and load every ``workers``-th chunk in one transaction; commit when told to."""
    import psycopg

    try:
        with psycopg.connect(**job.connect_params) as conn:
            try:
                with conn.cursor() as cursor:
                    _begin_load(cursor, job)
                    clock = _Clock()
                    for chunk in range(worker, job.chunks, workers):
                        payload, counts = job.render(chunk, cursor, clock)
                        reports.put(("chunk", counts, *_load_chunk(cursor, job.layouts, payload)))
                reports.put(("ready",))
                if verdict.get(timeout=WORKER_TIMEOUT) == "commit":
                    conn.commit()
                    reports.put(("committed",))
                else:
                    conn.rollback()
            except BaseException:
                conn.rollback()
                raise
    except BaseException:  # noqa: BLE001 - any failure must reach the parent, which re-raises it
        reports.put(("failed", traceback.format_exc()))
    finally:
        reports.close()
        reports.join_thread()


def _rendered_chunks(job: _CopyJob, workers: int) -> Iterator[tuple[list[tuple[str, bytes]], dict[str, int]]]:
    """Yield the chunks in order, rendered here (``workers=0``) or by forked worker processes."""
    if workers <= 0:
        import psycopg

        clock = _Clock()
        with psycopg.connect(**job.connect_params, autocommit=True) as conn, conn.cursor() as cursor:
            for chunk in range(job.chunks):
                yield job.render(chunk, cursor, clock)
        return
    context = multiprocessing.get_context("fork")
    queues = [context.Queue(maxsize=2) for _ in range(workers)]
    processes = [
        context.Process(target=_copy_worker, args=(job, w, workers, queues[w]), daemon=True) for w in range(workers)
    ]
    for process in processes:
        process.start()
    try:
        for chunk in range(job.chunks):
            w = chunk % workers
            waited = 0.0
            while True:
                try:
                    item = queues[w].get(timeout=1.0)
                    break
                except queue.Empty:
                    waited += 1.0
                    if not processes[w].is_alive() or waited > WORKER_TIMEOUT:
                        raise RuntimeError(f"Generator worker {w} stopped without sending chunk {chunk}.") from None
            if isinstance(item, str):
                raise RuntimeError(f"Generator worker {w} failed:\n{item}")
            yield item
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join(5)
        for q in queues:
            q.close()
