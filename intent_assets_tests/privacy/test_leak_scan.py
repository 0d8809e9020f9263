from intent_assets.privacy.leak_scan import scan, scan_text


def test_finds_leftover_pii_shapes():
    assert scan_text("mail me at jo.doe@example.org") == ["EMAIL"]
    assert scan_text("card 4111 1111 1111 1111 please") == ["CREDIT_CARD"]
    assert scan_text("call +44 20 7946 0958") == ["LONG_NUMBER"]
    assert scan_text("ssn 078-05-1120") == ["SSN"]
    assert scan_text("iban GB82 WEST 1234 5698 7654 32") == ["IBAN"]


def test_clean_and_redacted_text_passes():
    for text in ["I am still waiting on my card?", "I paid £1,250.00 on 12/03/2025", "email {{EMAIL}} card {{CREDIT_CARD}}", "top up 100 euros"]:
        assert scan_text(text) == []


def test_scan_reports_ids_not_values():
    counts, flagged = scan([("r1", "fine"), ("r2", "x@y.com")])
    assert flagged == ["r2"] and counts == {"EMAIL": 1}
