//! Kafka security settings: checked together at start (each error names the field to fix),
//! secrets read from their files, and turned into librdkafka's properties.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::KafkaConfig;
use crate::config::{field_error, ConfigError, Secret};

/// `kafka.security_protocol`, librdkafka's `security.protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl KafkaProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            KafkaProtocol::Plaintext => "plaintext",
            KafkaProtocol::Ssl => "ssl",
            KafkaProtocol::SaslPlaintext => "sasl_plaintext",
            KafkaProtocol::SaslSsl => "sasl_ssl",
        }
    }

    pub fn tls(self) -> bool {
        matches!(self, KafkaProtocol::Ssl | KafkaProtocol::SaslSsl)
    }

    pub fn sasl(self) -> bool {
        matches!(self, KafkaProtocol::SaslPlaintext | KafkaProtocol::SaslSsl)
    }
}

/// `kafka.sasl_mechanism`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    #[serde(rename = "OAUTHBEARER")]
    OAuthBearer,
    /// Amazon MSK's IAM access control: an OAUTHBEARER token that is a SigV4-signed URL.
    #[serde(rename = "AWS_MSK_IAM")]
    AwsMskIam,
}

impl SaslMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::OAuthBearer => "OAUTHBEARER",
            SaslMechanism::AwsMskIam => "AWS_MSK_IAM",
        }
    }

    /// Mechanisms that put the password or a bearer token on the wire as it is.
    fn sends_secret_in_clear(self) -> bool {
        matches!(
            self,
            SaslMechanism::Plain | SaslMechanism::OAuthBearer | SaslMechanism::AwsMskIam
        )
    }
}

/// Where OAUTHBEARER tokens come from: Sluice makes them and hands them to librdkafka.
#[derive(Clone)]
pub enum TokenSource {
    /// OIDC client credentials grant against `url`.
    Oidc {
        url: String,
        client_id: String,
        client_secret: Secret,
        scope: Option<String>,
    },
    /// A presigned `kafka-cluster:Connect` URL; `region` unset: the AWS chain's.
    MskIam { region: Option<String> },
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::Oidc {
                url,
                client_id,
                scope,
                ..
            } => f
                .debug_struct("Oidc")
                .field("url", url)
                .field("client_id", client_id)
                .field("scope", scope)
                .finish_non_exhaustive(),
            TokenSource::MskIam { region } => {
                f.debug_struct("MskIam").field("region", region).finish()
            }
        }
    }
}

/// The security settings, checked, with their secrets read.
#[derive(Clone)]
pub struct KafkaSecurity {
    /// librdkafka properties, secrets included: never log them.
    properties: Vec<(&'static str, String)>,
    pub token: Option<TokenSource>,
    /// For logs and `check-config`: protocol, mechanism, user; no secret.
    pub summary: String,
}

impl fmt::Debug for KafkaSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSecurity")
            .field("summary", &self.summary)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// librdkafka properties a security field sets; `kafka.properties` may not set them too.
const OWNED: &[(&str, &str)] = &[
    ("security.protocol", "kafka.security_protocol"),
    ("sasl.mechanism", "kafka.sasl_mechanism"),
    ("sasl.mechanisms", "kafka.sasl_mechanism"),
    ("sasl.username", "kafka.sasl_username"),
    ("sasl.password", "kafka.sasl_password_file"),
    ("ssl.ca.location", "kafka.ssl_ca_file"),
    ("ssl.ca.pem", "kafka.ssl_ca_file"),
    ("ssl.certificate.location", "kafka.ssl_cert_file"),
    ("ssl.certificate.pem", "kafka.ssl_cert_file"),
    ("ssl.key.location", "kafka.ssl_key_file"),
    ("ssl.key.pem", "kafka.ssl_key_file"),
    ("sasl.oauthbearer.method", "kafka.oauth_token_url"),
    (
        "sasl.oauthbearer.token.endpoint.url",
        "kafka.oauth_token_url",
    ),
    ("sasl.oauthbearer.client.id", "kafka.oauth_client_id"),
    (
        "sasl.oauthbearer.client.secret",
        "kafka.oauth_client_secret_file",
    ),
    ("sasl.oauthbearer.scope", "kafka.oauth_scope"),
    (
        "enable.sasl.oauthbearer.unsecure.jwt",
        "kafka.sasl_mechanism",
    ),
];

impl KafkaSecurity {
    /// Checks the security fields of `[kafka]` together and reads their files.
    pub fn from_config(k: &KafkaConfig) -> Result<KafkaSecurity, ConfigError> {
        for key in k.properties.keys() {
            if let Some((_, field)) = OWNED.iter().find(|(p, _)| p == key) {
                return Err(field_error(
                    &format!("kafka.properties.\"{key}\""),
                    format!("is set by {field}; set it there (one place for each setting)"),
                ));
            }
        }
        let protocol = k.security_protocol;
        let mut properties = vec![("security.protocol", protocol.as_str().to_string())];
        let mut summary = protocol.as_str().to_string();

        let ssl_fields = [
            ("kafka.ssl_ca_file", &k.ssl_ca_file),
            ("kafka.ssl_cert_file", &k.ssl_cert_file),
            ("kafka.ssl_key_file", &k.ssl_key_file),
        ];
        if protocol.tls() {
            if k.ssl_cert_file.is_some() != k.ssl_key_file.is_some() {
                return Err(field_error(
                    "kafka.ssl_key_file",
                    "kafka.ssl_cert_file and kafka.ssl_key_file are set together (a client certificate and its key), or neither",
                ));
            }
            match &k.ssl_ca_file {
                Some(path) => {
                    pem_file("kafka.ssl_ca_file", path, "CERTIFICATE")?;
                    properties.push(("ssl.ca.location", path_string(path)));
                }
                // The vendored OpenSSL's own default folder does not exist on the host:
                // librdkafka looks for the system's CA bundle in the usual places instead.
                None => properties.push(("ssl.ca.location", "probe".into())),
            }
            if let (Some(cert), Some(key)) = (&k.ssl_cert_file, &k.ssl_key_file) {
                pem_file("kafka.ssl_cert_file", cert, "CERTIFICATE")?;
                pem_file("kafka.ssl_key_file", key, "PRIVATE KEY")?;
                properties.push(("ssl.certificate.location", path_string(cert)));
                properties.push(("ssl.key.location", path_string(key)));
                summary.push_str(", client certificate");
            }
        } else if let Some((field, _)) = ssl_fields.iter().find(|(_, v)| v.is_some()) {
            return Err(field_error(
                field,
                format!(
                    "is used with TLS only, and kafka.security_protocol is {}: set it to ssl or sasl_ssl",
                    protocol.as_str()
                ),
            ));
        }

        let token = match (protocol.sasl(), k.sasl_mechanism) {
            (false, None) => {
                unused_sasl_fields(k, None)?;
                None
            }
            (false, Some(_)) => {
                return Err(field_error(
                    "kafka.sasl_mechanism",
                    format!(
                        "needs kafka.security_protocol sasl_ssl (or sasl_plaintext), not {}",
                        protocol.as_str()
                    ),
                ))
            }
            (true, None) => {
                return Err(field_error(
                    "kafka.sasl_mechanism",
                    format!(
                        "must be set with kafka.security_protocol {}: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM",
                        protocol.as_str()
                    ),
                ))
            }
            (true, Some(m)) => {
                if !protocol.tls() && m.sends_secret_in_clear() && !k.allow_insecure_sasl {
                    return Err(field_error(
                        "kafka.sasl_mechanism",
                        format!(
                            "{} sends the {} in clear over sasl_plaintext: use sasl_ssl, or set kafka.allow_insecure_sasl = true",
                            m.as_str(),
                            if m == SaslMechanism::Plain { "password" } else { "token" }
                        ),
                    ));
                }
                unused_sasl_fields(k, Some(m))?;
                summary.push_str(", ");
                summary.push_str(m.as_str());
                sasl(k, m, &mut properties, &mut summary)?
            }
        };
        Ok(KafkaSecurity {
            properties,
            token,
            summary,
        })
    }

    /// The librdkafka properties, secrets included.
    pub fn properties(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.properties.iter().map(|(k, v)| (*k, v.as_str()))
    }
}

/// The SASL settings for mechanism `m`.
fn sasl(
    k: &KafkaConfig,
    m: SaslMechanism,
    properties: &mut Vec<(&'static str, String)>,
    summary: &mut String,
) -> Result<Option<TokenSource>, ConfigError> {
    match m {
        SaslMechanism::Plain | SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => {
            let user = k
                .sasl_username
                .as_deref()
                .filter(|u| !u.is_empty())
                .ok_or_else(|| {
                    field_error(
                        "kafka.sasl_username",
                        format!("must be set for {}", m.as_str()),
                    )
                })?;
            let password = secret(
                "kafka.sasl_password_file",
                &k.sasl_password_file,
                "kafka.sasl_password",
                &k.sasl_password,
            )?
            .ok_or_else(|| {
                field_error(
                    "kafka.sasl_password_file",
                    format!(
                        "must be set for {} (or SLUICE_KAFKA__SASL_PASSWORD)",
                        m.as_str()
                    ),
                )
            })?;
            properties.push(("sasl.mechanism", m.as_str().into()));
            properties.push(("sasl.username", user.into()));
            properties.push(("sasl.password", password.expose().into()));
            summary.push_str(&format!(" as {user}"));
            Ok(None)
        }
        SaslMechanism::OAuthBearer => {
            let url = k.oauth_token_url.clone().ok_or_else(|| {
                field_error("kafka.oauth_token_url", "must be set for OAUTHBEARER")
            })?;
            token_url(&url)?;
            let client_id = k
                .oauth_client_id
                .clone()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    field_error("kafka.oauth_client_id", "must be set for OAUTHBEARER")
                })?;
            let client_secret = secret(
                "kafka.oauth_client_secret_file",
                &k.oauth_client_secret_file,
                "kafka.oauth_client_secret",
                &k.oauth_client_secret,
            )?
            .ok_or_else(|| {
                field_error(
                    "kafka.oauth_client_secret_file",
                    "must be set for OAUTHBEARER (or SLUICE_KAFKA__OAUTH_CLIENT_SECRET)",
                )
            })?;
            properties.push(("sasl.mechanism", "OAUTHBEARER".into()));
            summary.push_str(&format!(" as client {client_id} from {url}"));
            Ok(Some(TokenSource::Oidc {
                url,
                client_id,
                client_secret,
                scope: k.oauth_scope.clone(),
            }))
        }
        SaslMechanism::AwsMskIam => {
            properties.push(("sasl.mechanism", "OAUTHBEARER".into()));
            if let Some(r) = &k.msk_iam_region {
                if r.is_empty() || !r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                    return Err(field_error(
                        "kafka.msk_iam_region",
                        "must be an AWS region name such as eu-west-1",
                    ));
                }
                summary.push_str(&format!(" in {r}"));
            }
            Ok(Some(TokenSource::MskIam {
                region: k.msk_iam_region.clone(),
            }))
        }
    }
}

/// Refuses fields that mechanism `m` (or no SASL) does not use: a typo or a half-done change.
fn unused_sasl_fields(k: &KafkaConfig, m: Option<SaslMechanism>) -> Result<(), ConfigError> {
    use SaslMechanism as M;
    let password = matches!(m, Some(M::Plain | M::ScramSha256 | M::ScramSha512));
    let oauth = m == Some(M::OAuthBearer);
    let msk = m == Some(M::AwsMskIam);
    let fields = [
        ("kafka.sasl_username", k.sasl_username.is_some(), password),
        (
            "kafka.sasl_password_file",
            k.sasl_password_file.is_some(),
            password,
        ),
        ("kafka.sasl_password", k.sasl_password.is_some(), password),
        ("kafka.oauth_token_url", k.oauth_token_url.is_some(), oauth),
        ("kafka.oauth_client_id", k.oauth_client_id.is_some(), oauth),
        (
            "kafka.oauth_client_secret_file",
            k.oauth_client_secret_file.is_some(),
            oauth,
        ),
        (
            "kafka.oauth_client_secret",
            k.oauth_client_secret.is_some(),
            oauth,
        ),
        ("kafka.oauth_scope", k.oauth_scope.is_some(), oauth),
        ("kafka.msk_iam_region", k.msk_iam_region.is_some(), msk),
    ];
    for (field, set, used) in fields {
        if set && !used {
            return Err(field_error(
                field,
                format!(
                    "is not used with {}",
                    m.map_or("kafka.security_protocol without SASL", |m| m.as_str())
                ),
            ));
        }
    }
    Ok(())
}

/// A secret from its file (trailing line break dropped) or the environment, not both.
fn secret(
    file_field: &str,
    file: &Option<PathBuf>,
    env_field: &str,
    value: &Option<Secret>,
) -> Result<Option<Secret>, ConfigError> {
    let s = match (file, value) {
        (Some(_), Some(_)) => {
            return Err(field_error(
                env_field,
                format!("is set, and so is {file_field}: keep one"),
            ))
        }
        (Some(path), None) => {
            let text = read_small(file_field, path)?;
            let text = text.strip_suffix('\n').unwrap_or(&text);
            let text = text.strip_suffix('\r').unwrap_or(text);
            Secret::from(text.to_string())
        }
        (None, Some(v)) => v.clone(),
        (None, None) => return Ok(None),
    };
    if s.expose().is_empty() {
        return Err(field_error(file_field, "the secret is empty"));
    }
    if s.expose().contains('\0') {
        return Err(field_error(file_field, "the secret contains a NUL byte"));
    }
    Ok(Some(s))
}

/// Files here are keys, certificates and passwords: a few KiB. Anything far larger is a
/// wrong path, refused before it is read whole.
const MAX_FILE_BYTES: u64 = 1 << 20;

fn read_small(field: &str, path: &Path) -> Result<String, ConfigError> {
    let len = std::fs::metadata(path)
        .map_err(|e| field_error(field, format!("cannot read {}: {e}", path.display())))?
        .len();
    if len > MAX_FILE_BYTES {
        return Err(field_error(
            field,
            format!(
                "{} is {len} bytes, more than a key or certificate could be",
                path.display()
            ),
        ));
    }
    std::fs::read_to_string(path)
        .map_err(|e| field_error(field, format!("cannot read {}: {e}", path.display())))
}

/// A readable PEM file holding at least one `what` block.
fn pem_file(field: &str, path: &Path, what: &str) -> Result<(), ConfigError> {
    let text = read_small(field, path)?;
    let found = text
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.contains(what));
    if !found {
        return Err(field_error(
            field,
            format!("{} holds no PEM {what}", path.display()),
        ));
    }
    Ok(())
}

fn path_string(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// An `https` URL, or `http` to this host (a local IdP or a test's).
fn token_url(url: &str) -> Result<(), ConfigError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| field_error("kafka.oauth_token_url", format!("is not a URL: {e}")))?;
    let host = parsed.host_str().unwrap_or("");
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(field_error(
            "kafka.oauth_token_url",
            "must be https:// (http:// only to this host): the client secret is sent there",
        )),
    }
}
