"""StorageParams.Vendor codes (the API's values) and their names; imports nothing,
so every adapter can name a vendor without importing the adapter registry."""

from __future__ import annotations

LOCAL_DISK = 0
AMAZON_S3 = 1
ALIBABA_OSS = 2
TENCENT_COS = 3
QINIU_KODO = 4
HUAWEI_OBS = 7
GOOGLE_CLOUD_STORAGE = 8
CHINA_MOBILE_EOS = 9
S3_COMPATIBLE = 10

VENDOR_NAMES = {
    0: "node disk",
    1: "Amazon S3",
    2: "Alibaba Cloud OSS",
    3: "Tencent COS",
    4: "Qiniu Kodo",
    5: "Alibaba VOD",
    6: "Tencent VOD",
    7: "Huawei OBS",
    8: "Google Cloud Storage",
    9: "China Mobile EOS",
    10: "S3-compatible",
}
