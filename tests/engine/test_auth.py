import asyncio

import pytest

from engine import errors
from engine.auth import Authenticator, NonceCache, sign
from engine.store import AsyncStore, Store

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


def verify(authenticator, q):
    asyncio.run(authenticator.verify(q))


def test_valid_request_passes():
    verify(auth(), query())


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
    ({"SignatureNonce": "0123456789abcdef\n"}, errors.SignatureInvalid),
    # int() and str.isdigit() take these; the API must not
    ({"AppId": "\u00b2"}, errors.AppIdMalformed),  # '²': isdigit() but not int()
    ({"AppId": "\u0661\u0662\u0663\u0664"}, errors.AppIdMalformed),  # Arabic-Indic 1234
    ({"AppId": "1_234"}, errors.AppIdMalformed),
    ({"AppId": " 1234"}, errors.AppIdMalformed),
    ({"AppId": "+1234"}, errors.AppIdMalformed),
    ({"Timestamp": "9" * 400}, errors.TimestampMalformed),
    ({"Timestamp": f"{NOW:_}"}, errors.TimestampMalformed),
    ({"Timestamp": "".join(chr(0x660 + int(c)) for c in str(NOW))}, errors.TimestampMalformed),
    ({"Timestamp": f" {NOW}"}, errors.TimestampMalformed),
    ({"Timestamp": f"{NOW}\n"}, errors.TimestampMalformed),
    ({"Timestamp": "-1"}, errors.TimestampMalformed),
    ({"Signature": "\u00e9" * 32}, errors.SignatureInvalid),  # hmac.compare_digest refuses non-ASCII str
    ({"Signature": "g" * 32}, errors.SignatureInvalid),
])
def test_each_problem_has_its_code(over, error):
    with pytest.raises(error):
        auth().check(query(**over), NOW)


def test_wrong_app_id_is_an_invalid_signature():
    q = query(AppId="999")
    with pytest.raises(errors.SignatureInvalid):
        auth().check(q, NOW)


@pytest.mark.parametrize("skew", [601, -601, 3600])
def test_expired_outside_ten_minutes(skew):
    with pytest.raises(errors.SignatureExpired):
        auth().check(query(), NOW + skew)


@pytest.mark.parametrize("skew", [599, -599, 0])
def test_inside_the_window(skew):
    auth().check(query(), NOW + skew)


def test_replayed_nonce_is_refused():
    a = auth()
    verify(a, query())
    with pytest.raises(errors.SignatureInvalid, match="already used"):
        verify(a, query())


def test_nonce_forgotten_after_window():
    cache = NonceCache(window_s=600)
    assert cache.check_and_add("n1", 0)
    assert not cache.check_and_add("n1", 1000)
    assert cache.check_and_add("n1", 1201)


def test_used_nonces_outlive_a_restart_through_the_store(store_location):
    """A second cache on the same store (the node after a restart) refuses the
    nonces the first one accepted, until twice the window has passed."""

    async def run_node(steps):
        store = AsyncStore(Store(store_location))
        try:
            cache = NonceCache(window_s=600, store=store)
            await cache.load(steps[0][1])
            return [await cache.claim(nonce, now) for nonce, now in steps]
        finally:
            await asyncio.to_thread(store.close)

    assert asyncio.run(run_node([("n1", 1000), ("n2", 1500)])) == [True, True]
    assert asyncio.run(run_node([("n1", 1100), ("n2", 1100), ("n3", 1100)])) == [False, False, True]
    # 2 x 600 s after n1 was first seen it is forgotten, n2 (seen at 1500) is not
    assert asyncio.run(run_node([("n1", 2201), ("n2", 2201)])) == [True, False]


def test_a_nonce_used_on_one_node_is_refused_by_another_sharing_the_store(store_location):
    """Both caches loaded before the nonce was used: only the store can tell the second node."""

    async def run():
        stores = [AsyncStore(Store(store_location, node_id=name)) for name in ("node-1", "node-2")]
        try:
            one, two = (NonceCache(window_s=600, store=store) for store in stores)
            await one.load(1000)
            await two.load(1000)
            return [await one.claim("n1", 1000), await two.claim("n1", 1001), await two.claim("n2", 1001)]
        finally:
            for store in stores:
                await asyncio.to_thread(store.close)

    assert asyncio.run(run()) == [True, False, True]


def test_the_store_forgets_old_nonces(store_location):
    async def run():
        store = AsyncStore(Store(store_location))
        try:
            cache = NonceCache(window_s=600, store=store)
            await cache.claim("old", 0)
            await cache.claim("new", 100)
            await cache.claim("later", 1201)  # the prune interval has passed: 'old' is dropped
            return [nonce for nonce, _ in await store.nonces_since(float("-inf"))]
        finally:
            await asyncio.to_thread(store.close)

    assert asyncio.run(run()) == ["new", "later"]


def test_codes_table_covers_every_error():
    for cls in errors.ApiError.__subclasses__():
        assert errors.api_code(cls()) == errors.API_CODES[cls]
    assert errors.api_code(errors.SignatureExpired()) == 100000004
    assert errors.api_code(errors.InvalidParameter()) == 300000004
