"""Every default and limit of the node, named, in one place."""

from __future__ import annotations

# API contract (recording-api.md)
SIGNATURE_WINDOW_S = 600
SIGNATURE_VERSION = "2.0"
TASK_ID_LENGTH = 16
IDENTIFIER_MAX_BYTES = 128
TIMESTAMP_MAX_DIGITS = 19  # a longer Timestamp is malformed (Unix seconds have 10 digits until 2286)
NONCE_CACHE_MAX = 1_000_000  # nonces remembered (2 x the window): ~830 signed requests/s sustained
NONCE_PRUNE_INTERVAL_S = 60.0  # how often the store forgets nonces older than 2 x the window
API_MAX_BODY_BYTES = 1 << 20  # a larger body answers 100000012 in the envelope
# Streams one StartRecord may list: bounds the work one request causes (each
# missing stream is a worker wait and an event-6 callback). The hosted peers cap
# a task's streams too (TRTC: 25).
RECORD_STREAM_LIST_MAX = 50

STREAM_TYPE_DEFAULT = 3
MAX_IDLE_TIME_DEFAULT = 30
MAX_IDLE_TIME_RANGE = (5, 86400)
MAX_RECORD_TIME_DEFAULT = 86400
MAX_RECORD_TIME_RANGE = (300, 86400)
FRAGMENT_SECONDS_DEFAULT = 15
FRAGMENT_SECONDS_RANGE = (2, 60)
OUTPUT_FILE_FORMATS = ("mp4", "flv", "hls", "jpg", "mp3")
OUTPUT_FILE_FORMAT_DEFAULT = "mp4"
OUTPUT_FILE_RULE_DEFAULT = 1
SNAPSHOT_INTERVAL_DEFAULT = 10  # jpg: seconds between pictures (the hosted reference: 5..3600, default 10)
SNAPSHOT_INTERVAL_RANGE = (5, 3600)
RECORD_MUTE_AUDIO_DEFAULT = 1  # mp3: 1 muted audio recorded, 2 left out
MUTE_SPLIT_THRESHOLD_MAX = 86400  # RecordMuteAudioSplitThreshold (s); absent or negative: never split
MP4_AUDIO_CODECS = ("opus", "aac")  # --mp4-audio
MP4_AUDIO_DEFAULT = "opus"
DESCRIBE_PAGE_SIZE_DEFAULT = 50
DESCRIBE_PAGE_SIZE_RANGE = (1, 50)
DESCRIBE_WINDOW_MS = 3 * 24 * 3600 * 1000
# OutputFolder is a folder (a trailing '/' implied): each folder in it is a
# directory on the node's disk, 255 bytes a name.
OUTPUT_FOLDER_SEGMENT_MAX_BYTES = 255

# Node
HTTP_HOST = "127.0.0.1"
HTTP_PORT = 8080
HTTP_BACKLOG = 128  # connections waiting to be served (also while the node starts)
DATA_DIR = "./recnode-data"
APP_ID = 1
RTP_PORT_RANGE = (40000, 49999)
# A released RTP port pair is not handed out again for this long (while others are free):
# its old publisher may still be sending there.
RTP_PORT_REUSE_DELAY_S = 60.0
WORKER_READY_TIMEOUT_S = 10.0
WORKER_STOP_TIMEOUT_S = 10.0
WORKER_MAX_RESTARTS_PER_MINUTE = 3
STORE_FILENAME = "recnode.sqlite3"
# A PostgreSQL store (--store-url): how long a starting node waits for it, and the
# connection pool's size (store calls run one at a time, see engine.store.asyncstore).
STORE_CONNECT_TIMEOUT_S = 10.0
STORE_CONNECT_RETRY_S = 0.5
STORE_POOL_SIZE = 2
STORE_QUERY_WAIT_S = 30.0  # a call waiting this long for a pooled connection fails
STORE_LISTEN_WAKE_S = 1.0  # a LISTENing connection checks this often whether it is to stop
TASK_SYNC_POLL_S = 0.5  # a node reads the fleet's tasks at least this often (NOTIFY wakes it sooner)
STORAGE_DIRNAME = "storage"

# Room rules and callbacks
TICK_S = 0.25
STREAM_MISSING_EVENT_S = 30.0  # event 6: a listed stream not published this long after StartRecord
ROOM_EMPTY_EVENT_S = 30.0  # event 4: first within this of the room emptying, then every this
RTP_INACTIVITY_TIMEOUT_S = 10.0  # an RTP stream that sends nothing this long has left the room
CALLBACK_TIMEOUT_S = 5.0
CALLBACK_RETRIES = 2
CALLBACK_RETRY_INTERVAL_S = 5.0
TEST_MAX_IDLE_TIME_RANGE = (1, 86400)
TEST_MAX_RECORD_TIME_RANGE = (2, 86400)
TEST_EVENT_INTERVAL_S = 2.0

DRAIN_TIMEOUT_S = 30.0

# A fleet (engine.fleet): a node that has not renewed its lease for this long is gone
NODE_LEASE_S = 10.0

# Metrics: workers' per-track counters are polled this often (and at each scrape)
STATS_POLL_S = 5.0
STATS_TIMEOUT_S = 2.0

# Capacity (admission). benchmarks/results: 56 plain-RTP 720p 2.5 Mb/s streams
# recorded with zero defects on one core (71 % busy; the largest N tried), WHIP
# streams cost ~1.7x as much CPU; 40 per core leaves room for bursts and uploads,
# and CPU_CAP stops a node of WebRTC streams before its core is full.
MAX_STREAMS_PER_CORE = 40
MAX_TASKS = 500
CPU_CAP = 0.85
# CallbackUrl may not point into these: link-local and cloud metadata services.
# Loopback stays allowed so local receivers (and tests) work.
CALLBACK_DENY_NETWORKS = ("169.254.0.0/16", "fe80::/10", "100.100.100.200/32", "fd00:ec2::254/128")
# A caller's StorageParams.EndPoint may not point into these (nor into the list
# above) unless --storage-endpoint-allow names them: everything that is not the
# public internet (loopback and the unspecified address, private, shared and
# link-local ranges), so StartRecord cannot make the node reach services beside
# it. The operator's --storage-endpoint is not checked.
STORAGE_ENDPOINT_DENY_NETWORKS = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                  "100.64.0.0/10", "169.254.0.0/16", "fc00::/7", "fe80::/10")

# Storage
SPOOL_DIRNAME = "spool"
SPOOL_MAX_BYTES = 10 * 1024**3
# Settling a file whose worker never said it closed (engine.settle): how many are
# read back at once, and how much of one may be read (an hour of 2 Mb/s fMP4 or
# HLS needs ~30 MB: box headers, moofs, segment heads; FLV/WebM are demuxed whole).
SETTLE_PARALLEL_FILES = 2
SETTLE_READ_MAX_BYTES = 256 * 1024**2

# Vendor 0 FileUrls: signed links into /recordings/, valid this long after they are handed out
RECORDING_URL_TTL_S = 86400.0
# The web console: a login lasts this long; a wrong token answers after this pause
CONSOLE_SESSION_S = 12 * 3600
CONSOLE_LOGIN_FAILURE_DELAY_S = 0.5
CONSOLE_TASKS = 50  # tasks it lists
CONSOLE_CALLBACKS = 20  # recent callbacks it lists

# Media plane: contract/tuning.py (handed to every worker in WorkerConfig.tuning)

# Pulled streams (engine.pulls): the node subscribes to a WHEP server or an RTSP camera
PULL_RETRY_FIRST_S = 1.0  # a source that failed or dropped is tried again after this,
PULL_RETRY_MAX_S = 30.0  # doubling each time up to this (reset once it is live again)
PULL_OPEN_TIMEOUT_S = 10.0  # RTSP session set up / WHEP ICE + DTLS connected
PULL_STOPPED_KEEP_S = 600.0  # a deleted source still answers GET (state stopped) this long
WHEP_HTTP_TIMEOUT_S = 10.0
WHEP_MAX_REDIRECTS = 3
