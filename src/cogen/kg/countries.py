"""Facts about the world's countries from `countryinfo`, as names that appear in text.

countryinfo stores codes (ISO 639 languages, ISO 4217 currencies, alpha-3 borders) and a few
duplicate or historical records; this module turns codes into names with `pycountry` and
keeps one record per current ISO 3166-1 country, so every country is one entity.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import lru_cache

from cogen.kg.graph import Triple

# ISO 4217 fund and settlement codes: accounting units, not what a country pays with.
FUND_CODES = frozenset({"BOV", "CHE", "CHW", "CLF", "COU", "MXV", "USN", "USS", "UYI", "UYW", "XDR", "XSU", "XUA"})
# Codes countryinfo still lists but ISO 4217 has since replaced (redenominations, the euro).
REPLACED_CURRENCIES = {"BYR": "BYN", "MRO": "MRU", "SLL": "SLE", "STD": "STN", "VEF": "VES", "ZMK": "ZMW",
                       "HRK": "EUR", "BGN": "EUR"}

DEFAULT_RELATIONS = ("capital", "region", "subregion", "intermediate_region", "language", "currency",
                     "borders", "demonym")
EXTRA_RELATIONS = ("calling_code", "tld", "province")  # clean but arbitrary or outdated: opt in


def _strings(value) -> list[str]:
    """A field as a list of stripped, non-empty strings (countryinfo mixes str, list and None)."""
    items = value if isinstance(value, (list, tuple)) else [value]
    return [s.strip() for s in items if isinstance(s, str) and s.strip()]


def _single(value) -> list[str]:
    """At most one value, so capital/region/demonym stay functional; ambiguous entries
    ("Kralendijk / Oranjestad / The Bottom") are skipped rather than guessed."""
    values = _strings(value)
    return values if len(values) == 1 and "/" not in values[0] else []


def _language(code: str) -> str | None:
    """ISO 639-1 ("fr") or -3 ("cnr") code -> name. Not pycountry's fuzzy `lookup`: it
    matches "en" to a language *named* "En"."""
    import pycountry

    field = {2: "alpha_2", 3: "alpha_3"}.get(len(code), "name")
    language = pycountry.languages.get(**{field: code})
    # "Modern Greek (1453-)", "Swahili (macrolanguage)": the qualifier never appears in prose.
    return re.sub(r"\s*\(.*\)$", "", language.name) if language else None


def _currency(code: str) -> str | None:
    import pycountry

    if code in FUND_CODES:
        return None
    currency = pycountry.currencies.get(alpha_3=REPLACED_CURRENCIES.get(code, code))
    return currency.name if currency else None


def _calling_code(code: str) -> str:
    return "+" + code.lstrip("+")


def _extractors(names: dict[str, str]) -> dict[str, Callable[[dict], list[str]]]:
    """relation -> info dict -> tails. `names` maps alpha-3 and alpha-2 codes to the country
    names used as heads, so a border is the same entity as the country it names."""
    return {
        "capital": lambda info: _single(info.get("capital")),
        "region": lambda info: _single(info.get("region")),
        "subregion": lambda info: _single(info.get("subregion")),
        "intermediate_region": lambda info: _single(info.get("intermediateregion")),
        "language": lambda info: [_language(c) for c in _strings(info.get("languages"))],
        "currency": lambda info: [_currency(c) for c in _strings(info.get("currencies"))],
        "borders": lambda info: [names.get(c.upper()) for c in _strings(info.get("borders"))],
        # "Antiguan,Barbudan" -> "Antiguan and Barbudan", as prose writes a two-part demonym.
        "demonym": lambda info: [re.sub(r"\s*,\s*", " and ", d) for d in _single(info.get("demonym"))],
        "calling_code": lambda info: [_calling_code(c) for c in _strings(info.get("callingCodes"))],
        "tld": lambda info: [t for t in _strings(info.get("tld")) if t.isascii() and t.startswith(".")],
        "province": lambda info: _strings(info.get("provinces")),
    }


def _richness(info: dict) -> int:
    fields = ("capital", "region", "subregion", "languages", "currencies", "borders", "demonym")
    return sum(len(_strings(info.get(f))) for f in fields)


def countries() -> dict[str, dict]:
    """alpha-3 code -> one info record. countryinfo lists some countries twice (Myanmar and
    Burma, Palestine and "Palestine, State of", Wales under GBR) and some that are no current
    ISO country (Scotland, Serbia and Montenegro): keep the record with the most facts, ties
    going to the name ISO itself uses."""
    import pycountry
    from countryinfo import CountryInfo

    best: dict[str, dict] = {}
    for info in CountryInfo.all().values():
        code = (info.get("ISO") or {}).get("alpha3") or ""
        iso = pycountry.countries.get(alpha_3=code) if code else None
        if iso is None or not _strings(info.get("name")):
            continue
        rank = (_richness(info), info["name"].strip() == iso.name)
        if code not in best or rank > best[code][0]:
            best[code] = (rank, info)
    return {code: info for code, (_, info) in sorted(best.items())}


@lru_cache(maxsize=1)
def country_triples() -> dict[str, tuple[Triple, ...]]:
    """relation -> its triples over every country, deduplicated and sorted (deterministic)."""
    records = countries()
    names = {code: info["name"].strip() for code, info in records.items()}
    names |= {info["ISO"]["alpha2"]: info["name"].strip() for info in records.values() if info["ISO"].get("alpha2")}
    extractors = _extractors(names)
    out: dict[str, set[Triple]] = {r: set() for r in extractors}
    for code, info in records.items():
        for relation, extract in extractors.items():
            out[relation] |= {Triple(names[code], relation, tail) for tail in extract(info) if tail}
    return {relation: tuple(sorted(triples)) for relation, triples in out.items()}


def select(relations: Iterable[str] | None) -> tuple[Triple, ...]:
    """The triples of the chosen relations (the default set when None)."""
    by_relation = country_triples()
    return tuple(t for r in (relations or DEFAULT_RELATIONS) for t in by_relation[r])
