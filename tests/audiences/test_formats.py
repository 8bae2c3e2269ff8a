"""The files as Google and Meta accept them: headers, normalisation, and SHA-256 digests computed by hand
(``printf '%s' value | sha256sum``), not by the code under test."""

from __future__ import annotations

import pytest

from audiences.formats import (
    FORMATS,
    Identity,
    contact_email,
    contact_phone,
    google_email,
    google_name,
    google_row,
    google_zip,
    letters_only,
    meta_row,
    meta_state,
    meta_zip,
)

# sha256sum of the normalised values.
SHA = {
    "ada.lovelace@example.com": "e814ff3dc480a94c7ce9334062ec4733c75a002f4bcec0197f62ffea64059e2f",
    "adalovelace@gmail.com": "cd98a25152ad884b29e524ea5d3d8d35615ed0afbbc5ea3a6d4215572b0b2bde",
    "+4915112345678": "536afd523e19dc83fccba822ef5e4ca646111314aaf0aa286667c5bea18dd70b",
    "4915112345678": "8efb96404be52f6109b9db0f687274a81e9e3cc23fabd6f0da5d38baa3d2facd",
    "ada": "fdee430d40bd57deeac186cd9790033d0f06f909a8806e7ce6e717ab7c7d5029",
    "lovelace": "fb1e7ec987523d2cb9e022cec1d6ae7c99dc46edfae4fe51254025fe4bea571f",
    "berlin": "fb38a93fd89e1a5fc7852a5d7109e321d23a721a1899292273ac5a21dc4db378",
    "10115": "ac7bb74de6884ffce919c15fef4193749d4588026c643973946713ac46da540d",
    "de": "959a45d44e6fcf58361ed004681556fe50129f2109e817dec098c00c9e5d2578",
    "mary ann": "343b97011010c3549fe7fcd6c226ed9431ea37b0b77ed78f6300a0098925faf1",
    "maryann": "16b3f07f0ec2f9dd127b71dc2e6c791b7d93116a1c3bc99d057eaa7a8a077e73",
    "o'neil": "eb1aed4f494ca276a88d3161252e48e0fe703f32666fe44fe4652f660b82cda4",
    "oneil": "67a42a846e98e3c1a96cd6ba14883a5ea05990cd93964ce8b832aa9497ca785c",
    "+12025550143": "54af34308301e43f00650baaeb6cf4925b942201d74191b26d48292cfec907fd",
    "12025550143": "c117141ed6aa9255b2be93c99c3ae2c1786cd5fe0a78d382c4de0cbb90c9b486",
    "ca": "6959097001d10501ac7d54c0bdb8db61420f658f2922cc26e46d536119a31126",
    "94105": "e73ac16e69f060ee98b0fda5f66f48c4648ee26950e9bab3a097389853fd859e",
    "us": "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621",
    "springfield": "7ba84b57db28dcd3757ae13ee1c5ad77a194ae45575e72491bdcd8118babe0f4",
    "sw1a1": "949af780a19e6f6d4b99d7044743348dbbb7ab2245fe146863573b23d02c5890",
    "gb": "0b407281768f0e833afef47ed464b6571d01ca4d53c12ce5c51d1462f4ad6677",
    "london": "6089854c94ca5454b76be6752c562901a985f64c9a946f62976aeab593b83161",
    "zoë": "2752b88686847fa5c86f47b94ce652b7b3f22a91c37617d451a4db9afa431450",
}


def who(**fields: str) -> Identity:
    base = {"email": "", "phone": "", "first_name": "", "last_name": "", "country": "", "region": "", "city": "",
            "postal_code": ""}  # fmt: skip
    return Identity(**(base | fields))


def test_headers_are_exactly_the_platforms_column_names():
    assert FORMATS["google"].headers == ("Email", "Phone", "First Name", "Last Name", "Country", "Zip")
    assert FORMATS["meta"].headers == ("email", "phone", "fn", "ln", "ct", "st", "zip", "country")


@pytest.mark.parametrize(
    ("stored", "google", "meta"),
    [
        ("  Ada.Lovelace@Example.com ", "ada.lovelace@example.com", "ada.lovelace@example.com"),
        # Google alone drops dots and +suffix, and only for its consumer domains.
        ("Ada.Lovelace+ads@Gmail.com", "adalovelace@gmail.com", "ada.lovelace+ads@gmail.com"),
        ("a.d.a.lovelace+x+y@googlemail.com", "adalovelace@googlemail.com", "a.d.a.lovelace+x+y@googlemail.com"),
        ("ada.lovelace+ads@example.com", "ada.lovelace+ads@example.com", "ada.lovelace+ads@example.com"),
        ("ada.lovelace@gmail.com.example", "ada.lovelace@gmail.com.example", "ada.lovelace@gmail.com.example"),
    ],
)
def test_email_normalisation_starts_from_the_projects_and_adds_googles_rule(stored, google, meta):
    normalised = contact_email(stored)
    assert normalised == meta
    assert google_email(normalised) == google


def test_an_invalid_stored_email_or_phone_is_no_identifier():
    assert contact_email("not an email") == ""
    assert contact_email("a@b@example.com") == ""
    assert contact_phone("12") == ""
    assert contact_phone("+49 151 1234 5678") == "+4915112345678"  # legacy text: through normalise_phone
    assert contact_phone("+4915112345678") == "+4915112345678"


def test_google_row_hashes_email_phone_and_names_and_keeps_country_and_zip_clear():
    row = google_row(
        who(email="ada.lovelace+ads@gmail.com", phone="+4915112345678", first_name="  Ada ", last_name="Lovelace",
            country="DE", postal_code=" 10115 ")
    )  # fmt: skip
    assert row == [SHA["adalovelace@gmail.com"], SHA["+4915112345678"], SHA["ada"], SHA["lovelace"], "DE", "10115"]


def test_meta_row_hashes_every_value_with_metas_normalisation():
    row = meta_row(
        who(email="ada.lovelace@example.com", phone="+4915112345678", first_name="Ada", last_name="Lovelace",
            city="Berlin", region="Berlin", country="DE", postal_code="10115")
    )  # fmt: skip
    assert row == [
        SHA["ada.lovelace@example.com"], SHA["4915112345678"], SHA["ada"], SHA["lovelace"], SHA["berlin"],
        SHA["berlin"], SHA["10115"], SHA["de"],
    ]  # fmt: skip


def test_names_google_keeps_inner_spaces_and_punctuation_meta_keeps_letters_only():
    assert google_name("  Mary   Ann ") == "mary ann"
    assert google_name("O'Neil") == "o'neil"
    assert letters_only("Mary-Ann") == "maryann"
    assert letters_only("O'Neil") == "oneil"
    assert letters_only("Zoë") == "zoë"
    assert letters_only("Zoe\u0308") == "zoë", "decomposed accents compose (NFC) before hashing"
    assert meta_row(who(first_name="Mary-Ann", last_name="O'Neil"))[2:4] == [SHA["maryann"], SHA["oneil"]]
    assert google_row(who(first_name="Mary Ann", last_name="O'Neil"))[2:4] == [SHA["mary ann"], SHA["o'neil"]]
    assert meta_row(who(first_name="Zoë"))[2] == SHA["zoë"]


def test_us_and_uk_places_for_meta_and_google():
    us = who(phone="+12025550143", city="Springfield", region="California", country="US", postal_code="94105-1234")
    assert meta_row(us)[1] == SHA["12025550143"]
    assert meta_row(us)[4:] == [SHA["springfield"], SHA["ca"], SHA["94105"], SHA["us"]]
    assert google_row(us)[1] == SHA["+12025550143"]
    assert google_row(us)[4:] == ["US", "94105-1234"]
    assert meta_state("CA", "US") == meta_state("california", "US") == "ca"
    assert meta_state("Narnia", "US") == ""
    uk = who(city="London", country="GB", postal_code="SW1A 1AA")
    assert meta_row(uk)[4:] == [SHA["london"], "", SHA["sw1a1"], SHA["gb"]]
    assert google_row(uk)[4:] == ["GB", "SW1A 1AA"]


def test_zip_codes_lose_what_could_break_the_file_or_a_spreadsheet():
    assert google_zip("=1+2", "DE") == "12"
    assert google_zip("123", "US") == ""
    assert meta_zip(" 1011 5 ", "DE") == "10115"
    assert meta_zip("94105", "US") == "94105"


def test_empty_values_stay_empty_never_the_hash_of_nothing():
    assert google_row(who(email="ada.lovelace@example.com")) == [SHA["ada.lovelace@example.com"], "", "", "", "", ""]
    assert meta_row(who(phone="+4915112345678")) == ["", SHA["4915112345678"], "", "", "", "", "", ""]
