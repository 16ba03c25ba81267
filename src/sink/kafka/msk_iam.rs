//! Amazon MSK IAM access control over OAUTHBEARER: the token is a SigV4-presigned
//! `GET https://kafka.<region>.amazonaws.com/?Action=kafka-cluster:Connect`, valid 900 s, in
//! base64url without padding, as AWS's own signer libraries make it
//! (`aws-msk-iam-sasl-signer-python` and its Go, Java and JavaScript siblings; the integration
//! tests compare ours with the Python one byte for byte). Signed with AWS's `aws-sigv4`;
//! credentials come from the standard AWS chain (environment, profile, web identity/IRSA,
//! ECS, instance metadata), as for the Kinesis sink.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use base64::Engine;

use super::token::{MakeToken, Token};
use crate::percent::encode_unreserved;

/// How long a token is valid, as AWS's signers make them.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(900);
const SIGNING_NAME: &str = "kafka-cluster";
const ACTION: &str = "kafka-cluster:Connect";

/// The token for `region` signed with `credentials` at `at`, and when it expires (ms since the
/// epoch: the earlier of the signature's and the credentials' expiry).
pub fn token(
    credentials: &Credentials,
    region: &str,
    at: SystemTime,
    user_agent: &str,
) -> Result<(String, i64), String> {
    let url = format!(
        "https://kafka.{region}.amazonaws.com/?Action={}",
        encode_unreserved(ACTION)
    );
    let identity: Identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(TOKEN_LIFETIME);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SIGNING_NAME)
        .time(at)
        .settings(settings)
        .build()
        .map_err(|e| format!("signing parameters: {e}"))?
        .into();
    let request = SignableRequest::new("GET", &url, std::iter::empty(), SignableBody::Bytes(&[]))
        .map_err(|e| format!("signing the MSK IAM request: {e}"))?;
    let (instructions, _) = sign(request, &params)
        .map_err(|e| format!("signing the MSK IAM request: {e}"))?
        .into_parts();
    let mut signed = url;
    // The signature last, as AWS's signers order them (aws-sigv4 puts the session token after
    // it): the same token byte for byte.
    let mut params: Vec<_> = instructions.params().iter().collect();
    params.sort_by_key(|(name, _)| *name == "X-Amz-Signature");
    for (name, value) in params {
        signed.push('&');
        signed.push_str(name);
        signed.push('=');
        signed.push_str(&encode_unreserved(value));
    }
    // After the signature, as AWS's signers put it (it is not signed).
    signed.push_str("&User-Agent=");
    signed.push_str(&encode_unreserved(user_agent));
    let signed_at = at
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "the clock is before 1970")?
        .as_secs();
    let mut expires_ms = ((signed_at + TOKEN_LIFETIME.as_secs()) * 1000) as i64;
    if let Some(e) = credentials.expiry() {
        if let Ok(d) = e.duration_since(UNIX_EPOCH) {
            expires_ms = expires_ms.min(d.as_millis() as i64);
        }
    }
    Ok((
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signed),
        expires_ms,
    ))
}

/// Tokens signed with the credentials the AWS chain gives now (it caches and refreshes them).
pub struct MskIam {
    pub region: String,
    pub credentials: aws_credential_types::provider::SharedCredentialsProvider,
}

impl MskIam {
    /// The AWS chain's credentials, and `region` or else the chain's region.
    pub async fn from_chain(region: Option<String>) -> anyhow::Result<MskIam> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(r) = &region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        let sdk = loader.load().await;
        let region = sdk.region().map(|r| r.to_string()).ok_or_else(|| {
            anyhow::anyhow!("kafka.msk_iam_region: not set, and the AWS chain names no region (AWS_REGION, profile)")
        })?;
        let credentials = sdk.credentials_provider().ok_or_else(|| {
            anyhow::anyhow!(
                "kafka.sasl_mechanism AWS_MSK_IAM: the AWS chain has no credentials provider"
            )
        })?;
        Ok(MskIam {
            region,
            credentials,
        })
    }
}

#[async_trait]
impl MakeToken for MskIam {
    fn kind(&self) -> &'static str {
        "msk_iam"
    }

    async fn make(&self) -> Result<Token, String> {
        let creds = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| format!("AWS credentials: {e}"))?;
        let user_agent = concat!("sluice/", env!("CARGO_PKG_VERSION"));
        let (value, expires_at_ms) = token(&creds, &self.region, SystemTime::now(), user_agent)?;
        Ok(Token {
            value,
            // Informational for librdkafka; MSK takes the identity from the signature.
            principal: creds.access_key_id().to_string(),
            expires_at_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_the_presigned_connect_url_in_base64url() {
        let creds = Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
        let at = UNIX_EPOCH + Duration::from_secs(1_796_419_800); // 2026-12-04T21:30:00Z
        let (tok, exp) = token(&creds, "eu-west-1", at, "sluice/test").unwrap();
        let url = String::from_utf8(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&tok)
                .unwrap(),
        )
        .unwrap();
        assert!(
            url.starts_with("https://kafka.eu-west-1.amazonaws.com/?Action=kafka-cluster%3AConnect&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20261204%2Feu-west-1%2Fkafka-cluster%2Faws4_request&X-Amz-Date=20261204T213000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature="),
            "{url}"
        );
        assert!(url.ends_with("&User-Agent=sluice%2Ftest"), "{url}");
        assert_eq!(exp, (1_796_419_800 + 900) * 1000);

        // Credentials that expire sooner bound the token.
        let short = Credentials::new(
            "AKIDEXAMPLE",
            "secret",
            Some("token".into()),
            Some(at + Duration::from_secs(60)),
            "test",
        );
        let (_, exp) = token(&short, "eu-west-1", at, "sluice/test").unwrap();
        assert_eq!(exp, (1_796_419_800 + 60) * 1000);
    }
}
