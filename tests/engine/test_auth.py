import pytest

from engine import errors
from engine.auth import Authenticator, NonceCache, sign

SECRET = "s3cr3t-value"
NOW = 1_700_000_000


def query(**over):
    q = {"Action": "StartRecord", "AppId": "1234", "SignatureNonce": "0123456789abcdef",
         "Timestamp": str(NOW), "SignatureVersion": "2.0"}
    q.update(over)
    if "Signature" not in over:
        q["Signature"] = sign(q["AppId"], q["SignatureNonce"], SECRET, q["Timestamp"])
    return {k: v for k, v in q.items() if v is not None}


def auth(clock=NOW):
    return Authenticator(1234, SECRET, clock=lambda: clock)


def test_signature_is_md5_of_the_concatenation():
    import hashlib
    assert sign(1234, "abcd", "sec", 99) == hashlib.md5(b"1234abcdsec99").hexdigest()


def test_valid_request_passes():
    auth().verify(query())


@pytest.mark.parametrize("over, error", [
    ({"AppId": None}, errors.AppIdMalformed),
    ({"AppId": "12x"}, errors.AppIdMalformed),
    ({"AppId": str(2**32)}, errors.AppIdMalformed),
    ({"SignatureNonce": None}, errors.NonceEmpty),
    ({"Timestamp": None}, errors.TimestampEmpty),
    ({"Timestamp": "soon"}, errors.TimestampMalformed),
    ({"Signature": None}, errors.SignatureEmpty),
    ({"Signature": ""}, errors.SignatureEmpty),
    ({"SignatureVersion": None}, errors.SignatureVersionEmpty),
    ({"SignatureVersion": "1.0"}, errors.SignatureVersionNotSupported),
    ({"Signature": "0" * 32}, errors.SignatureInvalid),
    ({"SignatureNonce": "bad nonce!"}, errors.SignatureInvalid),
])
def test_each_problem_has_its_code(over, error):
    with pytest.raises(error):
        auth().verify(query(**over))


def test_wrong_app_id_is_an_invalid_signature():
    q = query(AppId="999")
    with pytest.raises(errors.SignatureInvalid):
        auth().verify(q)


@pytest.mark.parametrize("skew", [601, -601, 3600])
def test_expired_outside_ten_minutes(skew):
    with pytest.raises(errors.SignatureExpired):
        auth(clock=NOW + skew).verify(query())


@pytest.mark.parametrize("skew", [599, -599, 0])
def test_inside_the_window(skew):
    auth(clock=NOW + skew).verify(query())


def test_replayed_nonce_is_refused():
    a = auth()
    a.verify(query())
    with pytest.raises(errors.SignatureInvalid, match="already used"):
        a.verify(query())


def test_nonce_forgotten_after_window():
    cache = NonceCache(window_s=600)
    assert cache.check_and_add("n1", 0)
    assert not cache.check_and_add("n1", 1000)
    assert cache.check_and_add("n1", 1201)


def test_codes_table_covers_every_error():
    for cls in errors.ApiError.__subclasses__():
        assert errors.api_code(cls()) == errors.API_CODES[cls]
    assert errors.api_code(errors.SignatureExpired()) == 100000004
    assert errors.api_code(errors.InvalidParameter()) == 300000004
