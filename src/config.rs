//! Configuration: one TOML file, overlaid by `SLUICE_<SECTION>__<FIELD>` environment
//! variables, overlaid on defaults. Section and field names are a contract, documented in
//! sluice.example.toml (scripts, the Helm chart and operators rely on them: add fields, rename
//! none).
//!
//! Loading never panics: every problem becomes a [`ConfigError`] whose message names the
//! field, so a bad deployment fails at start with something an operator can act on.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

mod kafka;
pub use kafka::{KafkaProtocol, KafkaSecurity, SaslMechanism, TokenSource};

/// Prefix of every environment variable that overrides a config field.
pub const ENV_PREFIX: &str = "SLUICE_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("environment variable {var}: expected SLUICE_<SECTION>__<FIELD>")]
    EnvName { var: String },
    #[error("config field `{field}`: {message}")]
    Field { field: String, message: String },
}

fn field_error(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.to_string(),
        message: message.into(),
    }
}

/// The config file's sections, as named in the environment.
const SECTIONS: &[&str] = &[
    "server",
    "limits",
    "schemas",
    "sink",
    "file",
    "kafka",
    "kinesis",
    "routes",
    "auth",
    "registry",
    "rate_limits",
    "spool",
    "tls",
    "log",
];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub limits: LimitsConfig,
    pub schemas: SchemasConfig,
    pub sink: SinkConfig,
    pub file: FileConfig,
    pub kafka: KafkaConfig,
    pub kinesis: KinesisConfig,
    pub routes: RoutesConfig,
    pub auth: AuthConfig,
    pub registry: RegistryConfig,
    pub rate_limits: RateLimitsConfig,
    pub spool: SpoolConfig,
    pub tls: TlsConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Unset: the admin routes (/healthz, /readyz, /metrics) are served on the main port.
    pub admin_listen: Option<SocketAddr>,
    /// Upper bound from SIGTERM to exit, drain delay included.
    pub shutdown_grace: HumanDuration,
    /// Time between readiness turning 503 and the listener closing, so that load balancers
    /// stop routing to this replica before it stops accepting.
    pub drain_delay: HumanDuration,
    /// A client that has not finished sending its body by then gets 408: slow bodies must not
    /// hold memory and connections forever.
    pub body_timeout: HumanDuration,
    /// A connection older than this (±10 %) is closed gracefully (HTTP/2 GOAWAY, HTTP/1.1
    /// after the request in progress), so clients reconnect through the load balancer and
    /// spread over new replicas; `0s`: no limit. One still busy `shutdown_grace` later is cut.
    pub max_connection_age: HumanDuration,
    /// A request head (or, on a new connection, the first request) not complete this long
    /// after its first byte: the connection is cut. Slowloris' bound.
    pub header_read_timeout: HumanDuration,
    /// A connection with no request in flight for this long is closed gracefully (HTTP/2
    /// GOAWAY). Longer than load balancers' own idle timeouts (AWS ALB: 60 s), so that they
    /// close first and never send on a connection Sluice is closing.
    pub idle_timeout: HumanDuration,
    /// Open client connections at most, per listener; new ones past it are closed at once.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams (requests) of one connection.
    pub max_streams_per_connection: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin_listen: None,
            shutdown_grace: HumanDuration::from_secs(30),
            drain_delay: HumanDuration::from_secs(5),
            body_timeout: HumanDuration::from_secs(30),
            max_connection_age: HumanDuration::from_secs(300),
            header_read_timeout: HumanDuration::from_secs(10),
            idle_timeout: HumanDuration::from_secs(75),
            max_connections: 10_000,
            max_streams_per_connection: 100,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Request body as received (before decompression).
    pub max_body_bytes: ByteSize,
    /// Request body after decompression; enforced while inflating.
    pub max_decompressed_bytes: ByteSize,
    /// One event's JSON; 1 MiB is the record cap of both Kafka's default and Kinesis.
    pub max_event_bytes: ByteSize,
    pub max_events: usize,
    /// JSON nesting depth of one event (the event object itself is depth 1).
    pub max_depth: usize,
    /// Extension attributes of one event (each becomes a Kafka header or envelope field).
    pub max_extensions: usize,
    /// All request headers together, counted as on the wire in HTTP/1.1 (name, `: `, value,
    /// CRLF). At most [`MAX_HEADER_BYTES_CAP`]: hyper's own read buffer refuses heads past
    /// ~400 KiB with a bare 431 before Sluice sees them.
    pub max_header_bytes: ByteSize,
    /// Events decoded and not yet answered, process-wide: admission control's bound.
    pub max_inflight_events: usize,
    /// Request bodies held at once, process-wide (their received size).
    pub max_inflight_bytes: ByteSize,
    /// The same, for the requests of one connection (HTTP/2 multiplexes many).
    pub max_inflight_bytes_per_connection: ByteSize,
    /// How long a request may wait for admission before 503 + Retry-After.
    pub admission_wait: HumanDuration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: ByteSize(5 * MIB),
            max_decompressed_bytes: ByteSize(20 * MIB),
            max_event_bytes: ByteSize(MIB),
            max_events: 1000,
            max_depth: 64,
            max_extensions: 32,
            max_header_bytes: ByteSize(64 * KIB),
            max_inflight_events: 20_000,
            max_inflight_bytes: ByteSize(256 * MIB),
            max_inflight_bytes_per_connection: ByteSize(64 * MIB),
            admission_wait: HumanDuration(Duration::from_millis(200)),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchemasConfig {
    pub dir: PathBuf,
}

impl Default for SchemasConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("schemas"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    #[default]
    File,
    Kafka,
    Kinesis,
    /// Counts and drops. For benchmarks only: nothing sent to it is kept.
    Blackhole,
}

impl fmt::Display for SinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SinkKind::File => "file",
            SinkKind::Kafka => "kafka",
            SinkKind::Kinesis => "kinesis",
            SinkKind::Blackhole => "blackhole",
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinkConfig {
    pub kind: SinkKind,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub dir: PathBuf,
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("data"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers (`host:port`, comma-separated in the environment).
    #[serde(deserialize_with = "string_or_list")]
    pub brokers: Vec<String>,
    pub client_id: String,
    /// librdkafka's `linger.ms`; 5 is librdkafka's default since 1.7.
    pub linger_ms: u64,
    pub compression: String,
    /// librdkafka's `message.timeout.ms`: how long an event may wait for its broker ack before
    /// the client is told it failed. Kept well under typical HTTP client timeouts
    /// (librdkafka's own default is 300000).
    pub delivery_timeout_ms: u64,
    /// How often readiness re-checks that a broker answers.
    pub probe_interval: HumanDuration,
    /// Passed to librdkafka as-is, after (and so over) the settings above. Keys that a
    /// security field below sets are refused here (one place for each setting).
    pub properties: BTreeMap<String, String>,
    // Security (see src/config/kafka.rs and README "Kafka security"). Secrets come from files
    // (or, for sasl_password and oauth_client_secret, the environment), never shown by Debug.
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub security_protocol: KafkaProtocol,
    /// `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`, `OAUTHBEARER` or `AWS_MSK_IAM`.
    pub sasl_mechanism: Option<SaslMechanism>,
    pub sasl_username: Option<String>,
    pub sasl_password_file: Option<PathBuf>,
    /// From the environment (`SLUICE_KAFKA__SASL_PASSWORD`); `sasl_password_file` otherwise.
    pub sasl_password: Option<Secret>,
    /// CA certificates (PEM) that verify the brokers; unset: the system's.
    pub ssl_ca_file: Option<PathBuf>,
    /// A client certificate (PEM, with its chain) and its key, for brokers that require one.
    pub ssl_cert_file: Option<PathBuf>,
    pub ssl_key_file: Option<PathBuf>,
    /// OAUTHBEARER: the OIDC token endpoint (client credentials grant).
    pub oauth_token_url: Option<String>,
    pub oauth_client_id: Option<String>,
    pub oauth_client_secret_file: Option<PathBuf>,
    /// From the environment (`SLUICE_KAFKA__OAUTH_CLIENT_SECRET`).
    pub oauth_client_secret: Option<Secret>,
    pub oauth_scope: Option<String>,
    /// AWS_MSK_IAM: the cluster's region; unset: the AWS chain's (`AWS_REGION`, profile).
    pub msk_iam_region: Option<String>,
    /// Lets PLAIN, OAUTHBEARER or AWS_MSK_IAM run over `sasl_plaintext`, which sends the
    /// password or token in clear. Off: refused at start.
    pub allow_insecure_sasl: bool,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: Vec::new(),
            client_id: "sluice".into(),
            linger_ms: 5,
            compression: "zstd".into(),
            delivery_timeout_ms: 10_000,
            probe_interval: HumanDuration::from_secs(2),
            properties: BTreeMap::new(),
            security_protocol: KafkaProtocol::default(),
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password_file: None,
            sasl_password: None,
            ssl_ca_file: None,
            ssl_cert_file: None,
            ssl_key_file: None,
            oauth_token_url: None,
            oauth_client_id: None,
            oauth_client_secret_file: None,
            oauth_client_secret: None,
            oauth_scope: None,
            msk_iam_region: None,
            allow_insecure_sasl: false,
        }
    }
}

const KAFKA_COMPRESSIONS: &[&str] = &["none", "gzip", "snappy", "lz4", "zstd"];

/// How a record's data is laid out in Kinesis, which has no record headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KinesisFormat {
    /// A CloudEvents JSON event (structured mode): the attributes, Sluice's metadata as
    /// `sluice*` extensions, and `data` (or `data_base64`). See docs/kinesis.md.
    #[default]
    Envelope,
    /// The event's data only, exactly as the Kafka sink writes the value.
    Raw,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KinesisConfig {
    /// Unset: the standard AWS chain (`AWS_REGION`, profile).
    pub region: Option<String>,
    /// An emulator or VPC endpoint, e.g. `http://127.0.0.1:4566`.
    pub endpoint_url: Option<String>,
    /// How long a record may wait for others to share its PutRecords call.
    pub linger: HumanDuration,
    /// Records per PutRecords call (at most 500).
    pub max_batch_records: usize,
    /// Bytes (data + partition keys) per PutRecords call (at most 5 MiB).
    pub max_batch_bytes: ByteSize,
    /// PutRecords calls in flight at once.
    pub max_in_flight_calls: usize,
    /// An event not acknowledged by then (retries included) is reported failed (503).
    pub delivery_timeout: HumanDuration,
    /// One PutRecords call's own time limit.
    pub call_timeout: HumanDuration,
    /// Readiness re-checks the streams this often (DescribeStreamSummary).
    pub probe_interval: HumanDuration,
    pub format: KinesisFormat,
    /// Streams `/readyz` checks with DescribeStreamSummary; empty: ListStreams answers.
    pub streams: Vec<String>,
}

impl Default for KinesisConfig {
    fn default() -> Self {
        Self {
            region: None,
            endpoint_url: None,
            linger: HumanDuration(Duration::from_millis(10)),
            max_batch_records: 500,
            max_batch_bytes: ByteSize(5 * MIB),
            max_in_flight_calls: 8,
            delivery_timeout: HumanDuration::from_secs(10),
            call_timeout: HumanDuration::from_secs(5),
            probe_interval: HumanDuration::from_secs(10),
            format: KinesisFormat::Envelope,
            streams: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutesConfig {
    /// Topic for events no rule matches; `{type}` is the event type with characters outside
    /// Kafka's topic alphabet replaced by `_`.
    pub default_topic: String,
    /// Confluent wire format (magic byte 0 + 4-byte schema id before the JSON) for events no
    /// rule matches.
    pub confluent_wire_format: bool,
    /// Topic (template) that events no rule matches also go to when refused by validation
    /// or authorization, with the error in headers. Unset: no dead letters.
    pub dead_letter_topic: Option<String>,
    /// Dead letters per second, process-wide, before they are dropped (and counted).
    pub dead_letter_rate: u64,
    /// When events no rule matches are answered 2xx: after the broker acknowledged them
    /// (`broker`, spooling only while the broker is down or slow) or once they are in the
    /// disk spool (`spool`). `spool` needs `spool.enabled`.
    pub ack: Ack,
    /// First match wins.
    pub rules: Vec<RouteRule>,
}

impl Default for RoutesConfig {
    fn default() -> Self {
        Self {
            default_topic: "events.{type}".into(),
            confluent_wire_format: false,
            dead_letter_topic: None,
            dead_letter_rate: 100,
            ack: Ack::Broker,
            rules: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    /// Event type pattern: exact, or a prefix ending in `*` (`checkout.*`), or `*`.
    #[serde(rename = "type")]
    pub type_pattern: String,
    /// Tenant pattern, same grammar (`acme`, `eu-*`, `*`); unset matches every request,
    /// authenticated or not.
    #[serde(default)]
    pub tenant: Option<String>,
    pub topic: String,
    /// Frame values in Confluent's wire format so Confluent deserializers read them.
    #[serde(default)]
    pub confluent_wire_format: bool,
    /// This rule's dead-letter topic (template).
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// This rule's acknowledgement mode; unset: `routes.ack`.
    #[serde(default)]
    pub ack: Option<Ack>,
}

/// When a 2xx is sent for an event: see docs/delivery.md.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ack {
    /// After the broker acknowledged it (`acks=all`); into the spool only while the broker is
    /// unreachable or slower than `spool.ack_timeout`, when the spool is enabled.
    #[default]
    Broker,
    /// Once it is fsynced in the local spool; replayed to the broker in the background.
    Spool,
}

/// TLS on the listeners (rustls), off unless `cert_file` and `key_file` are set.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// PEM CA certificates that client certificates must chain to; set to ask for them.
    pub client_ca_file: Option<PathBuf>,
    /// PEM certificate revocation lists (one per CA of the client chains, below the trust
    /// anchor): a client certificate listed there, or whose status no CRL covers, or checked
    /// against a CRL past its `nextUpdate`, fails the handshake. Re-read with the other files.
    pub client_crl_file: Option<PathBuf>,
    /// With `client_ca_file`: `optional` (a client may present one) or `required` (the
    /// handshake fails without one).
    pub client_auth: ClientAuth,
    /// The files are re-read this often; changed ones replace the served certificate (and
    /// client CAs) without a restart. New connections get the new one.
    pub reload_interval: HumanDuration,
    /// A connection that has not finished its handshake by then is closed.
    pub handshake_timeout: HumanDuration,
    /// Handshakes in progress at once from one client address; more are closed at once, so
    /// one source cannot take the listener's 4 096 pending handshakes. `0`: no per-source
    /// bound (behind a TCP proxy that hides client addresses).
    pub max_pending_handshakes_per_source: usize,
    /// Also TLS on `server.admin_listen` (probes then need `scheme: HTTPS`).
    pub admin: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            client_crl_file: None,
            client_auth: ClientAuth::Optional,
            reload_interval: HumanDuration::from_secs(10),
            handshake_timeout: HumanDuration::from_secs(10),
            max_pending_handshakes_per_source: 64,
            admin: false,
        }
    }
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    Optional,
    Required,
}

/// The disk spool: a write-ahead log on local disk for when the sink is down or slow.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpoolConfig {
    pub enabled: bool,
    pub dir: PathBuf,
    /// Disk quota; when full, requests that would need the spool get 503 + Retry-After.
    pub max_bytes: ByteSize,
    /// Segment files roll at this size; a segment is deleted once all its records are acked.
    pub segment_bytes: ByteSize,
    /// With `ack = "broker"`: how long to wait for the broker before spooling instead.
    pub ack_timeout: HumanDuration,
    /// Records per publish while replaying.
    pub replay_batch: usize,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            dir: PathBuf::from("data/spool"),
            max_bytes: ByteSize(GIB),
            segment_bytes: ByteSize(8 * MIB),
            ack_timeout: HumanDuration::from_secs(2),
            replay_batch: 500,
        }
    }
}

/// Per-tenant rate limits (token buckets). 0 means unlimited.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitsConfig {
    /// For every tenant without its own entry (and for unauthenticated traffic).
    pub default: RateLimitConfig,
    /// Bucket size, as seconds of the rate: how far a tenant may burst above it.
    pub burst: HumanDuration,
    pub tenants: Vec<TenantRateLimit>,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        Self {
            default: RateLimitConfig::default(),
            burst: HumanDuration::from_secs(1),
            tenants: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    pub events_per_second: u64,
    /// Body bytes as received.
    pub bytes_per_second: ByteSize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantRateLimit {
    pub tenant: String,
    #[serde(default)]
    pub events_per_second: u64,
    #[serde(default)]
    pub bytes_per_second: ByteSize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnConflict {
    /// A schema file that disagrees with the registry stops start-up.
    #[default]
    Fail,
    /// It is logged and skipped.
    Warn,
}

/// The schema registry's store.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// `sqlite://<path>` (relative to the working directory; the embedded default) or
    /// `postgres://user@host/db` (shared by every replica).
    pub url: String,
    /// What a `schemas/` file that conflicts with the registry does at start.
    pub on_conflict: OnConflict,
    /// How often a replica checks the store for changes made elsewhere. With PostgreSQL,
    /// LISTEN/NOTIFY brings changes at once and this is the safety net.
    pub poll_interval: HumanDuration,
    /// Registry reads (GET, lookups, compatibility checks) without a `registry:read` scope.
    pub open_reads: bool,
    /// The largest body a registration, lookup or compatibility request may have (the
    /// schema, JSON-encoded in it); larger ones get 413 before they are parsed.
    pub max_schema_bytes: ByteSize,
    /// The work one compatibility check may do, in steps (a pair of subschemas compared, or
    /// a schema node walked); past it the answer is "cannot decide" (409 on registration).
    pub compat_budget: u64,
    /// How long compiling a schema or checking compatibility may take before the client is
    /// answered (cannot decide, or 422 for a compilation).
    pub compat_timeout: HumanDuration,
    /// The most subschema applications a schema may make to one value of an event (its
    /// combinators and `$ref`s, counted level by level to `limits.max_depth`); schemas that
    /// could make more are refused (422), so validating an event costs at most this times its
    /// size.
    pub max_schema_fanout: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://data/registry.db".into(),
            on_conflict: OnConflict::Fail,
            poll_interval: HumanDuration::from_secs(5),
            open_reads: false,
            max_schema_bytes: ByteSize(MIB),
            compat_budget: crate::registry::compat::DEFAULT_BUDGET,
            compat_timeout: HumanDuration::from_secs(10),
            max_schema_fanout: 1000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every ingest request needs a valid JWT or API key.
    Required,
    /// No credentials are checked, and only clients on this machine (loopback) are served:
    /// what runs when no key source is configured and `auth.mode` is not set (Redis'
    /// protected mode). Others get 401 `protected_mode` saying what to configure.
    Protected,
    /// Anyone may write any type and change the registry. Logged loudly at start.
    Disabled,
}

/// Authentication: JWT bearer tokens (static keys, JWKS URLs), API keys, browser keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Unset: `required` when any key source is configured, else `disabled`.
    pub mode: Option<AuthMode>,
    /// Accepted `iss` values; unset: `iss` is not checked.
    #[serde(deserialize_with = "string_or_list")]
    pub issuer: Vec<String>,
    /// Accepted `aud` values (one must be in the token); unset: tokens with an `aud` are
    /// refused, as RFC 7519 asks of a recipient that does not know its name.
    #[serde(deserialize_with = "string_or_list")]
    pub audience: Vec<String>,
    #[serde(deserialize_with = "string_or_list")]
    pub jwks_urls: Vec<String>,
    /// Background refresh of every JWKS URL.
    pub jwks_refresh_interval: HumanDuration,
    /// A token with an unknown `kid` triggers a refetch at most this often per URL, so a
    /// flood of made-up `kid`s cannot make Sluice hammer the identity provider.
    pub jwks_min_refetch_interval: HumanDuration,
    /// Connect + read timeout of one JWKS fetch.
    pub jwks_timeout: HumanDuration,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: HumanDuration,
    /// Claim naming the tenant (a top-level name, else a dotted path such as `org.id`).
    pub tenant_claim: String,
    /// Tenant for tokens without `tenant_claim`; unset: such tokens are refused.
    pub default_tenant: Option<String>,
    /// Claim(s) carrying scopes, each a space-separated string (`scope`) or an array (`scp`).
    /// One name or a list (the config contract names this field `scope_claim`).
    #[serde(deserialize_with = "string_or_list")]
    pub scope_claim: Vec<String>,
    /// Longer bearer tokens are refused before any parsing.
    pub max_token_bytes: ByteSize,
    /// Verified tokens remembered (by SHA-256) so that a client reusing its token skips the
    /// signature check; 0 turns the cache off.
    pub token_cache_size: usize,
    /// How long a verified token is trusted without a new check (never past its `exp`). It
    /// bounds how long a key withdrawn from a JWKS keeps working for tokens already seen.
    pub token_cache_ttl: HumanDuration,
    /// Static verification keys.
    pub keys: Vec<StaticKeyConfig>,
    /// API keys, stored as hashes (`sluice keys generate` prints an entry).
    pub api_keys: Vec<ApiKeyConfig>,
    /// A TOML file of more `[[api_keys]]` entries (e.g. a mounted Kubernetes Secret).
    pub api_keys_file: Option<PathBuf>,
    /// `api_keys_file` is re-read this often: keys added, rotated or revoked there take
    /// effect without a restart (a file that does not load keeps the previous keys).
    pub api_keys_reload_interval: HumanDuration,
    /// Identities for TLS client certificates (mTLS, `tls.client_ca_file`).
    pub client_certs: Vec<ClientCertConfig>,
    pub cors: CorsConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: None,
            issuer: Vec::new(),
            audience: Vec::new(),
            jwks_urls: Vec::new(),
            jwks_refresh_interval: HumanDuration::from_secs(300),
            jwks_min_refetch_interval: HumanDuration::from_secs(30),
            jwks_timeout: HumanDuration::from_secs(5),
            leeway: HumanDuration::from_secs(30),
            tenant_claim: "tenant".into(),
            default_tenant: None,
            scope_claim: vec!["scope".into(), "scp".into()],
            max_token_bytes: ByteSize(16 * KIB),
            token_cache_size: 10_000,
            token_cache_ttl: HumanDuration::from_secs(60),
            keys: Vec::new(),
            api_keys: Vec::new(),
            api_keys_file: None,
            api_keys_reload_interval: HumanDuration::from_secs(10),
            client_certs: Vec::new(),
            cors: CorsConfig::default(),
        }
    }
}

impl AuthConfig {
    pub fn has_key_source(&self) -> bool {
        !self.keys.is_empty()
            || !self.jwks_urls.is_empty()
            || !self.api_keys.is_empty()
            || self.api_keys_file.is_some()
            || !self.client_certs.is_empty()
    }

    pub fn effective_mode(&self) -> AuthMode {
        self.mode.unwrap_or(if self.has_key_source() {
            AuthMode::Required
        } else {
            AuthMode::Protected
        })
    }
}

/// A client certificate identity: a request that carries no token or API key but came over a
/// TLS connection whose verified client certificate names `subject` is this tenant.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientCertConfig {
    /// A DNS or URI subject alternative name of the certificate (`ingest.acme.internal`,
    /// `spiffe://acme/ns/shop/sa/checkout`), or its subject common name when it has no SAN.
    pub subject: String,
    pub tenant: String,
    pub scopes: Vec<String>,
}

/// One static JWT verification key. Exactly one of the key fields is set; the algorithm is
/// the key's, and a token whose header names another is refused.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StaticKeyConfig {
    /// Tokens naming a `kid` are checked against keys with that `kid` only.
    pub kid: Option<String>,
    /// HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA.
    pub algorithm: String,
    /// HMAC secret (its UTF-8 bytes).
    pub secret: Option<Secret>,
    pub secret_file: Option<PathBuf>,
    /// Public key, PEM (SPKI or PKCS#1 for RSA).
    pub pem: Option<String>,
    pub pem_file: Option<PathBuf>,
    /// Public key as one JWK (JSON).
    pub jwk: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyClass {
    /// Kept secret by a backend service.
    #[default]
    Server,
    /// Public by design (shipped in web pages): write scopes only, origin-checked.
    Browser,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The key's public id (the part after `sk_`/`pk_`); finds the entry without a scan.
    pub id: String,
    /// `sha256:<hex>` of the whole key. The key itself is never stored.
    pub hash: String,
    pub tenant: String,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub class: KeyClass,
    /// Browser keys: `Origin` values allowed (`https://app.example.com`,
    /// `https://*.example.com`).
    #[serde(default)]
    pub origins: Vec<String>,
    /// RFC 3339 (`2027-01-31T00:00:00Z`) or a date; unset: never.
    #[serde(default)]
    pub expires: Option<String>,
    /// For logs: which client this is.
    #[serde(default)]
    pub name: Option<String>,
}

/// CORS for browsers posting events. Allowed origins are those of the browser keys plus
/// `allowed_origins` (for web apps that authenticate with JWTs).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    #[serde(deserialize_with = "string_or_list")]
    pub allowed_origins: Vec<String>,
    /// Request headers a browser may send (`Access-Control-Allow-Headers`).
    #[serde(deserialize_with = "string_or_list")]
    pub allowed_headers: Vec<String>,
    /// How long browsers may cache a preflight answer (Chrome caps it at 2h).
    pub max_age: HumanDuration,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            allowed_headers: [
                "authorization",
                "content-type",
                "content-encoding",
                "x-api-key",
                "x-request-id",
                "ce-specversion",
                "ce-type",
                "ce-id",
                "ce-source",
                "ce-time",
                "ce-subject",
                "ce-dataschema",
                "ce-partitionkey",
                "ce-schemaversion",
            ]
            .map(String::from)
            .to_vec(),
            max_age: HumanDuration::from_secs(600),
        }
    }
}

/// A secret from config: never shown by `Debug`, so it cannot leak through logs.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter (`info`, `sluice=debug,rdkafka=warn`); `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl Config {
    /// Defaults, then the file (if any), then `SLUICE_*` variables from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut root = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                toml::from_str::<toml::Table>(&text).map_err(|e| ConfigError::Syntax {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?
            }
            None => toml::Table::new(),
        };
        for (var, value) in env {
            let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if !rest.contains("__") {
                // Not a config field (SLUICE_CONFIG names the file; tools have their own
                // SLUICE_* variables), unless it looks like one with a single underscore.
                let lower = rest.to_ascii_lowercase();
                if SECTIONS.iter().any(|s| lower.starts_with(&format!("{s}_"))) {
                    return Err(ConfigError::EnvName { var });
                }
                continue;
            }
            overlay_env(&mut root, &var, rest, &value)?;
        }
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(root)).map_err(|e| {
                let field = e.path().to_string();
                field_error(&field, e.into_inner().message().to_string())
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Refuses settings that parse but cannot work, naming the field to fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        for (name, v) in [
            ("limits.max_body_bytes", l.max_body_bytes.0),
            ("limits.max_decompressed_bytes", l.max_decompressed_bytes.0),
            ("limits.max_event_bytes", l.max_event_bytes.0),
            ("limits.max_events", l.max_events as u64),
            ("limits.max_depth", l.max_depth as u64),
            ("limits.max_header_bytes", l.max_header_bytes.0),
        ] {
            if v == 0 {
                return Err(field_error(name, "must be greater than 0"));
            }
        }
        // The spool frames a record's header count in 16 bits, with Sluice's own headers.
        if l.max_extensions > 1024 {
            return Err(field_error("limits.max_extensions", "must be at most 1024"));
        }
        if l.max_inflight_events < l.max_events {
            return Err(field_error(
                "limits.max_inflight_events",
                "must be at least limits.max_events, or a full request could never be admitted",
            ));
        }
        if l.max_inflight_bytes.0 < l.max_decompressed_bytes.0 {
            return Err(field_error(
                "limits.max_inflight_bytes",
                "must be at least limits.max_decompressed_bytes, or a full (inflated) body could never be admitted",
            ));
        }
        if l.max_inflight_bytes_per_connection.0
            < l.max_decompressed_bytes.0.max(l.max_body_bytes.0)
        {
            return Err(field_error(
                "limits.max_inflight_bytes_per_connection",
                "must be at least limits.max_decompressed_bytes and limits.max_body_bytes, or a full body could never be admitted",
            ));
        }
        if l.max_inflight_bytes.0 > 4 * GIB {
            return Err(field_error(
                "limits.max_inflight_bytes",
                "must be at most 4GiB",
            ));
        }
        if l.max_header_bytes.0 > MAX_HEADER_BYTES_CAP {
            return Err(field_error(
                "limits.max_header_bytes",
                "must be at most 256KiB (larger heads are refused by the HTTP layer first)",
            ));
        }
        if l.max_depth > 512 {
            return Err(field_error(
                "limits.max_depth",
                "must be at most 512 (deeper JSON is refused by the parser anyway)",
            ));
        }
        if l.max_decompressed_bytes.0 < l.max_body_bytes.0 {
            return Err(field_error(
                "limits.max_decompressed_bytes",
                "must be at least limits.max_body_bytes (an uncompressed body counts against both)",
            ));
        }
        if l.max_event_bytes.0 > l.max_decompressed_bytes.0 {
            return Err(field_error(
                "limits.max_event_bytes",
                "must not exceed limits.max_decompressed_bytes",
            ));
        }
        let t = &self.tls;
        if t.cert_file.is_some() != t.key_file.is_some() {
            return Err(field_error(
                "tls.key_file",
                "tls.cert_file and tls.key_file are set together (or neither, for plain HTTP)",
            ));
        }
        if t.client_ca_file.is_some() && !t.enabled() {
            return Err(field_error(
                "tls.client_ca_file",
                "client certificates need TLS: set tls.cert_file and tls.key_file too",
            ));
        }
        if t.client_crl_file.is_some() && t.client_ca_file.is_none() {
            return Err(field_error(
                "tls.client_crl_file",
                "revocation lists apply to client certificates: set tls.client_ca_file too",
            ));
        }
        if !self.auth.client_certs.is_empty() && t.client_ca_file.is_none() {
            return Err(field_error(
                "auth.client_certs",
                "needs tls.client_ca_file, or no client certificate is ever verified",
            ));
        }
        for (name, d) in [
            ("tls.reload_interval", t.reload_interval.0),
            ("tls.handshake_timeout", t.handshake_timeout.0),
            (
                "auth.api_keys_reload_interval",
                self.auth.api_keys_reload_interval.0,
            ),
            (
                "server.header_read_timeout",
                self.server.header_read_timeout.0,
            ),
            ("server.idle_timeout", self.server.idle_timeout.0),
        ] {
            if d.is_zero() {
                return Err(field_error(name, "must be greater than 0"));
            }
        }
        if self.server.max_connections == 0 {
            return Err(field_error(
                "server.max_connections",
                "must be greater than 0",
            ));
        }
        if self.server.max_streams_per_connection == 0 {
            return Err(field_error(
                "server.max_streams_per_connection",
                "must be greater than 0",
            ));
        }
        if self.server.drain_delay.0 >= self.server.shutdown_grace.0
            && !self.server.shutdown_grace.0.is_zero()
        {
            return Err(field_error(
                "server.drain_delay",
                "must be shorter than server.shutdown_grace, or in-flight requests get no time to finish",
            ));
        }
        match self.sink.kind {
            SinkKind::Kafka => {
                if self.kafka.brokers.is_empty() {
                    return Err(field_error(
                        "kafka.brokers",
                        "must be set when sink.kind = \"kafka\" (e.g. SLUICE_KAFKA__BROKERS=127.0.0.1:9092)",
                    ));
                }
                if !KAFKA_COMPRESSIONS.contains(&self.kafka.compression.as_str()) {
                    return Err(field_error(
                        "kafka.compression",
                        format!("must be one of {}", KAFKA_COMPRESSIONS.join(", ")),
                    ));
                }
                if self.kafka.delivery_timeout_ms == 0 {
                    return Err(field_error(
                        "kafka.delivery_timeout_ms",
                        "must be greater than 0",
                    ));
                }
                KafkaSecurity::from_config(&self.kafka)?;
            }
            SinkKind::Kinesis => {
                let k = &self.kinesis;
                if !(1..=500).contains(&k.max_batch_records) {
                    return Err(field_error(
                        "kinesis.max_batch_records",
                        "must be between 1 and 500 (PutRecords' limit)",
                    ));
                }
                if k.max_batch_bytes.0 == 0 || k.max_batch_bytes.0 > 5 * MIB {
                    return Err(field_error(
                        "kinesis.max_batch_bytes",
                        "must be greater than 0 and at most 5MiB (PutRecords' limit)",
                    ));
                }
                if k.max_in_flight_calls == 0 {
                    return Err(field_error(
                        "kinesis.max_in_flight_calls",
                        "must be greater than 0",
                    ));
                }
                for (name, d) in [
                    ("kinesis.delivery_timeout", k.delivery_timeout.0),
                    ("kinesis.call_timeout", k.call_timeout.0),
                    ("kinesis.probe_interval", k.probe_interval.0),
                ] {
                    if d.is_zero() {
                        return Err(field_error(name, "must be greater than 0"));
                    }
                }
            }
            SinkKind::File | SinkKind::Blackhole => {}
        }
        let router = crate::pipeline::TopicRouter::from_config(&self.routes)
            .map_err(|(field, message)| field_error(&field, message))?;
        let framed = self.routes.confluent_wire_format
            || self.routes.rules.iter().any(|r| r.confluent_wire_format);
        if framed && self.sink.kind == SinkKind::File {
            return Err(field_error(
                "routes.confluent_wire_format",
                "frames values in binary, which the file sink (NDJSON) cannot hold; use it with kafka",
            ));
        }
        let spool_acked = self.routes.ack == Ack::Spool
            || self.routes.rules.iter().any(|r| r.ack == Some(Ack::Spool));
        if spool_acked && !self.spool.enabled {
            return Err(field_error(
                "routes.ack",
                "is \"spool\" for some route but spool.enabled is false",
            ));
        }
        if self.spool.enabled {
            let sp = &self.spool;
            if sp.max_bytes.0 < self.limits.max_body_bytes.0 * 2 {
                return Err(field_error(
                    "spool.max_bytes",
                    "must be at least twice limits.max_body_bytes",
                ));
            }
            if sp.segment_bytes.0 == 0 || sp.segment_bytes.0 > sp.max_bytes.0 {
                return Err(field_error(
                    "spool.segment_bytes",
                    "must be greater than 0 and at most spool.max_bytes",
                ));
            }
            if sp.replay_batch == 0 {
                return Err(field_error("spool.replay_batch", "must be greater than 0"));
            }
            if sp.ack_timeout.0.is_zero() {
                return Err(field_error("spool.ack_timeout", "must be greater than 0"));
            }
        }
        if router.uses_tenant() && self.auth.effective_mode() != AuthMode::Required {
            return Err(field_error(
                "routes",
                "a topic uses {tenant} but auth is disabled, so no request has a tenant",
            ));
        }
        if self.auth.mode == Some(AuthMode::Required) && !self.auth.has_key_source() {
            return Err(field_error(
                "auth.mode",
                "is `required` but no key source is set (auth.keys, auth.jwks_urls, auth.api_keys or auth.api_keys_file)",
            ));
        }
        if !(self.registry.url.starts_with("sqlite://")
            || self.registry.url.starts_with("postgres://")
            || self.registry.url.starts_with("postgresql://"))
        {
            return Err(field_error(
                "registry.url",
                "must start with sqlite:// (e.g. sqlite://data/registry.db) or postgres://",
            ));
        }
        if self.registry.poll_interval.0.is_zero() {
            return Err(field_error(
                "registry.poll_interval",
                "must be greater than 0",
            ));
        }
        for (field, zero) in [
            (
                "registry.max_schema_bytes",
                self.registry.max_schema_bytes.0 == 0,
            ),
            ("registry.compat_budget", self.registry.compat_budget == 0),
            (
                "registry.compat_timeout",
                self.registry.compat_timeout.0.is_zero(),
            ),
            (
                "registry.max_schema_fanout",
                self.registry.max_schema_fanout == 0,
            ),
        ] {
            if zero {
                return Err(field_error(field, "must be greater than 0"));
            }
        }
        // Builds the key sets (reading key files) without fetching anything.
        crate::auth::Authenticator::check_config(&self.auth)
            .map_err(|(field, message)| field_error(&field, message))?;
        // Reads the certificate, key and client CAs and builds the rustls configuration.
        crate::tls::Tls::from_config(&self.tls)
            .map_err(|e| field_error("tls", format!("{e:#}")))?;
        Ok(())
    }
}

/// Places one `SLUICE_A__B[__C]` variable into the TOML tree. A value that reads as a TOML
/// integer, float or boolean becomes one; anything else stays a string. librdkafka property
/// names contain dots, which variables cannot: `SLUICE_KAFKA__PROPERTIES__SOCKET_TIMEOUT_MS`
/// sets `socket.timeout.ms`.
fn overlay_env(
    root: &mut toml::Table,
    var: &str,
    rest: &str,
    value: &str,
) -> Result<(), ConfigError> {
    let parts: Vec<&str> = rest.split("__").collect();
    if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(ConfigError::EnvName {
            var: var.to_string(),
        });
    }
    let mut keys: Vec<String> = parts.iter().map(|p| p.to_ascii_lowercase()).collect();
    if keys.len() == 3 && keys[0] == "kafka" && keys[1] == "properties" {
        keys[2] = keys[2].replace('_', ".");
    }
    // Secrets and names stay as written ("0123" is a password, not the number 123).
    let verbatim = ["password", "secret", "username", "client_id"]
        .iter()
        .any(|s| keys.last().is_some_and(|k| k.ends_with(s)));
    let leaf = if verbatim || keys.len() == 3 && keys[1] == "properties" {
        toml::Value::String(value.to_string())
    } else {
        typed_env_value(value)
    };
    let (last, path) = keys.split_last().expect("at least two parts");
    let mut table = root;
    for key in path {
        let entry = table
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match entry {
            toml::Value::Table(t) => t,
            _ => {
                return Err(field_error(
                    &keys.join("."),
                    format!("{var} names a field inside a value that is not a section"),
                ))
            }
        };
    }
    table.insert(last.clone(), leaf);
    Ok(())
}

fn typed_env_value(value: &str) -> toml::Value {
    let trimmed = value.trim();
    if let Ok(i) = trimmed.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    match trimmed {
        "true" => return toml::Value::Boolean(true),
        "false" => return toml::Value::Boolean(false),
        _ => {}
    }
    if trimmed.contains('.') && !trimmed.contains(':') {
        if let Ok(f) = trimmed.parse::<f64>() {
            return toml::Value::Float(f);
        }
    }
    toml::Value::String(value.to_string())
}

fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        OneOrMany::Many(v) => v,
    })
}

pub const KIB: u64 = 1024;
/// The largest `limits.max_header_bytes`: below hyper's fixed HTTP/1.1 read buffer
/// (8 KiB + 400 KiB), so that Sluice's own, explained 431 is the one clients get.
pub const MAX_HEADER_BYTES_CAP: u64 = 256 * KIB;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;

/// A size in bytes, written as an integer or as `512KiB`, `5MiB`, `1GB` (SI and IEC units).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

/// Splits `512KiB` into `(512, "KiB")`.
fn number_and_unit(s: &str) -> Option<(u64, &str)> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    Some((num.parse().ok()?, unit.trim()))
}

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (n, unit) = number_and_unit(s)
            .ok_or_else(|| format!("`{s}` is not a size (write 1048576, 512KiB or 5MiB)"))?;
        let mult = match unit {
            "" | "B" => 1,
            "KB" | "kB" => 1000,
            "KiB" => KIB,
            "MB" => 1000 * 1000,
            "MiB" => MIB,
            "GB" => 1000 * 1000 * 1000,
            "GiB" => GIB,
            other => {
                return Err(format!(
                    "unknown size unit `{other}` (use B, KiB, MiB, GiB, KB, MB, GB)"
                ))
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("`{s}` is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A duration written with its unit: `30s`, `500ms`, `2m`, `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn from_secs(s: u64) -> Self {
        HumanDuration(Duration::from_secs(s))
    }
}

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (n, unit) = number_and_unit(s)
            .ok_or_else(|| format!("`{s}` is not a duration (write 30s, 500ms, 2m)"))?;
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "" => return Err(format!("`{s}` needs a unit (ms, s, m, h)")),
            other => return Err(format!("unknown duration unit `{other}` (use ms, s, m, h)")),
        };
        Ok(HumanDuration(d))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_embedded_file_sink() {
        let c = Config::load(None, vec![]).unwrap();
        assert_eq!(c.server.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.sink.kind, SinkKind::File);
        assert_eq!(c.file.dir, PathBuf::from("data"));
        assert_eq!(c.limits.max_body_bytes.0, 5 * MIB);
        assert_eq!(c.limits.max_decompressed_bytes.0, 20 * MIB);
        assert_eq!(c.limits.max_event_bytes.0, MIB);
        assert_eq!(c.limits.max_events, 1000);
        assert_eq!(c.limits.max_depth, 64);
        assert_eq!(c.server.shutdown_grace.0, Duration::from_secs(30));
    }

    #[test]
    fn env_overrides_file_and_types_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(
            &path,
            "[server]\nlisten = \"127.0.0.1:1\"\n[kafka]\nlinger_ms = 50\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&path),
            env(&[
                ("SLUICE_SERVER__LISTEN", "127.0.0.1:8081"),
                ("SLUICE_SINK__KIND", "kafka"),
                ("SLUICE_KAFKA__BROKERS", "a:9092, b:9092"),
                ("SLUICE_KAFKA__PROPERTIES__SOCKET_TIMEOUT_MS", "1000"),
                ("SLUICE_LIMITS__MAX_EVENT_BYTES", "64KiB"),
                ("SLUICE_LIMITS__MAX_EVENTS", "10"),
                ("SLUICE_SERVER__DRAIN_DELAY", "0s"),
                ("OTHER", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8081");
        assert_eq!(c.sink.kind, SinkKind::Kafka);
        assert_eq!(c.kafka.brokers, vec!["a:9092", "b:9092"]);
        assert_eq!(c.kafka.linger_ms, 50, "file value kept where env is silent");
        assert_eq!(c.kafka.properties["socket.timeout.ms"], "1000");
        assert_eq!(c.limits.max_event_bytes.0, 64 * KIB);
        assert_eq!(c.limits.max_events, 10);
        assert_eq!(c.server.drain_delay.0, Duration::ZERO);
    }

    fn err(pairs: &[(&str, &str)]) -> String {
        Config::load(None, env(pairs)).unwrap_err().to_string()
    }

    #[test]
    fn the_hardening_limits_are_checked_at_start() {
        for (var, value, field) in [
            (
                "SLUICE_SERVER__HEADER_READ_TIMEOUT",
                "0s",
                "server.header_read_timeout",
            ),
            ("SLUICE_SERVER__IDLE_TIMEOUT", "0s", "server.idle_timeout"),
            (
                "SLUICE_SERVER__MAX_CONNECTIONS",
                "0",
                "server.max_connections",
            ),
            (
                "SLUICE_SERVER__MAX_STREAMS_PER_CONNECTION",
                "0",
                "server.max_streams_per_connection",
            ),
            (
                "SLUICE_LIMITS__MAX_EXTENSIONS",
                "1025",
                "limits.max_extensions",
            ),
            (
                "SLUICE_LIMITS__MAX_INFLIGHT_BYTES_PER_CONNECTION",
                "1MiB",
                "limits.max_inflight_bytes_per_connection",
            ),
            (
                "SLUICE_REGISTRY__MAX_SCHEMA_BYTES",
                "0",
                "registry.max_schema_bytes",
            ),
            (
                "SLUICE_REGISTRY__COMPAT_BUDGET",
                "0",
                "registry.compat_budget",
            ),
            (
                "SLUICE_REGISTRY__COMPAT_TIMEOUT",
                "0s",
                "registry.compat_timeout",
            ),
            (
                "SLUICE_REGISTRY__MAX_SCHEMA_FANOUT",
                "0",
                "registry.max_schema_fanout",
            ),
        ] {
            let e = err(&[(var, value)]);
            assert!(e.contains(field), "{var}={value}: {e}");
        }
        assert!(Config::load(None, env(&[("SLUICE_LIMITS__MAX_EXTENSIONS", "1024")])).is_ok());
    }

    #[test]
    fn bad_values_name_the_field() {
        assert!(err(&[("SLUICE_SERVER__LISTEN", "nope")]).contains("server.listen"));
        assert!(err(&[("SLUICE_LIMITS__MAX_BODY_BYTES", "5 parsecs")])
            .contains("limits.max_body_bytes"));
        assert!(err(&[("SLUICE_SINK__KIND", "carrier-pigeon")]).contains("sink.kind"));
        assert!(err(&[("SLUICE_SINK__KIND", "kafka")]).contains("kafka.brokers"));
        assert!(err(&[("SLUICE_LIMITS__MAX_EVENTS", "0")]).contains("limits.max_events"));
        assert!(err(&[("SLUICE_SERVER__SHUTDOWN_GRACE", "30")]).contains("server.shutdown_grace"));
        assert!(err(&[("SLUICE_SERVER__TYPO", "1")]).contains("typo"));
        assert!(err(&[("SLUICE_SERVER_LISTEN", "1")]).contains("SLUICE_<SECTION>__<FIELD>"));
        assert!(err(&[("SLUICE_NOSUCH__FIELD", "1")]).contains("nosuch"));
        // Other tools' SLUICE_* variables are not config.
        assert!(Config::load(
            None,
            env(&[("SLUICE_TOOLS_DIR", "/x"), ("SLUICE_CONFIG", "f")])
        )
        .is_ok());
        assert!(err(&[
            ("SLUICE_SINK__KIND", "kafka"),
            ("SLUICE_KAFKA__BROKERS", "x:1"),
            ("SLUICE_KAFKA__COMPRESSION", "brotli")
        ])
        .contains("kafka.compression"));
    }

    #[test]
    fn the_example_config_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("sluice.example.toml");
        let c = Config::load(Some(&path), vec![]).unwrap();
        let d = Config::default();
        assert_eq!(c.server.listen, d.server.listen);
        assert_eq!(c.auth.effective_mode(), AuthMode::Protected);
        assert_eq!(c.auth.cors.allowed_headers, d.auth.cors.allowed_headers);
        assert_eq!(c.auth.cors.max_age.0, d.auth.cors.max_age.0);
        assert_eq!(c.auth.token_cache_ttl.0, d.auth.token_cache_ttl.0);
        assert_eq!(c.auth.max_token_bytes, d.auth.max_token_bytes);
        assert_eq!(c.routes.ack, d.routes.ack);
        assert_eq!(c.spool.enabled, d.spool.enabled);
        assert_eq!(c.spool.dir, d.spool.dir);
        assert_eq!(c.spool.max_bytes, d.spool.max_bytes);
        assert_eq!(c.spool.segment_bytes, d.spool.segment_bytes);
        assert_eq!(c.spool.ack_timeout.0, d.spool.ack_timeout.0);
        assert_eq!(c.spool.replay_batch, d.spool.replay_batch);
        let (k, dk) = (&c.kinesis, &d.kinesis);
        assert_eq!(k.linger.0, dk.linger.0);
        assert_eq!(k.max_batch_records, dk.max_batch_records);
        assert_eq!(k.max_batch_bytes, dk.max_batch_bytes);
        assert_eq!(k.max_in_flight_calls, dk.max_in_flight_calls);
        assert_eq!(k.delivery_timeout.0, dk.delivery_timeout.0);
        assert_eq!(k.call_timeout.0, dk.call_timeout.0);
        assert_eq!(k.probe_interval.0, dk.probe_interval.0);
        assert_eq!(k.format, dk.format);
    }

    #[test]
    fn auth_lists_come_from_the_environment_and_mode_follows_key_sources() {
        let c = Config::load(
            None,
            vec![
                (
                    "SLUICE_AUTH__JWKS_URLS".to_string(),
                    "https://a.test/jwks, https://b.test/jwks".to_string(),
                ),
                ("SLUICE_AUTH__AUDIENCE".to_string(), "sluice".to_string()),
            ],
        )
        .unwrap();
        assert_eq!(c.auth.jwks_urls.len(), 2);
        assert_eq!(c.auth.audience, ["sluice"]);
        assert_eq!(c.auth.effective_mode(), AuthMode::Required);
        let c = Config::load(
            None,
            vec![
                (
                    "SLUICE_AUTH__JWKS_URLS".to_string(),
                    "https://a.test/jwks".to_string(),
                ),
                ("SLUICE_AUTH__MODE".to_string(), "disabled".to_string()),
            ],
        )
        .unwrap();
        assert_eq!(c.auth.effective_mode(), AuthMode::Disabled);
        assert!(format!("{:?}", Secret::from("hunter2".to_string())).contains("redacted"));
    }

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!("5MiB".parse::<ByteSize>().unwrap().0, 5 * MIB);
        assert_eq!("1KB".parse::<ByteSize>().unwrap().0, 1000);
        assert_eq!("123".parse::<ByteSize>().unwrap().0, 123);
        assert!("99999999999999999999GiB".parse::<ByteSize>().is_err());
        assert_eq!(
            "500ms".parse::<HumanDuration>().unwrap().0,
            Duration::from_millis(500)
        );
        assert_eq!(
            "2m".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(120)
        );
        assert!("2".parse::<HumanDuration>().is_err());
    }
}
