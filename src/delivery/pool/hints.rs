//! The one log line of a misconfigured provider: which setting to check.

use crate::providers::DeliveryError;

/// Which credential or setting to check, for the one log line of a
/// misconfigured provider.
pub(super) fn credential_hint(error: &DeliveryError) -> &'static str {
    let (status, reason) = match error {
        DeliveryError::Rejected { status, reason, .. } => (*status, reason.as_str()),
        DeliveryError::Credentials(_) => {
            return "cannot produce credentials: check key_file / service_account_file and the OAuth2 token endpoint";
        }
        _ => return "the provider refuses our requests",
    };
    match reason {
        "InvalidProviderToken" | "MissingProviderToken" => {
            "APNs refuses the provider token: check team_id, key_id and key_file (the .p8 key)"
        }
        "ExpiredProviderToken" => {
            "APNs says a fresh provider token has expired: check this machine's clock"
        }
        "BadCertificate" | "BadCertificateEnvironment" => {
            "APNs refuses the credentials for this environment: check the endpoint (production or sandbox)"
        }
        "Forbidden" => "APNs forbids this key for the topic: check topic and team_id",
        "BadPath" | "MethodNotAllowed" => "APNs refuses the request path: check the endpoint",
        "THIRD_PARTY_AUTH_ERROR" => {
            "FCM cannot reach APNs for iOS devices: check the APNs key uploaded to Firebase"
        }
        "PERMISSION_DENIED" | "SENDER_ID_MISMATCH" => {
            "FCM denies this service account: check service_account_file and project_id"
        }
        _ if status == 401 => "the provider refuses our bearer token: check service_account_file",
        _ if status == 404 => "the provider does not know this path: check endpoint and project_id",
        _ => "the provider refuses our credentials or endpoint",
    }
}
