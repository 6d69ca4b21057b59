from engine.callbacks import retry_delay, signature


def test_the_specs_signature_test_vector():
    assert signature("secret", "1470820198", "123412") == "5bd59fd62953a8059fb7eaba95720f66d19e4517"


def test_retries_back_off_and_are_never_sooner_than_the_interval():
    assert [retry_delay(5.0, n) for n in (1, 2, 3)] == [5.0, 10.0, 20.0]
    assert retry_delay(5.0, 30) == 300.0
