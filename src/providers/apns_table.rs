//! The APNs status/reason table (`docs/protocol.md` §6): what each answer
//! means, and the reasons that may become metric labels.

use super::error::ErrorClass;

/// Every reason [`classify`] knows: the only ones that become metric labels.
pub(crate) const KNOWN_REASONS: &[&str] = &[
    "Unregistered",
    "ExpiredToken",
    "BadDeviceToken",
    "DeviceTokenNotForTopic",
    "BadCollapseId",
    "BadExpirationDate",
    "BadMessageId",
    "BadPriority",
    "BadTopic",
    "DuplicateHeaders",
    "IdleTimeout",
    "InvalidPushType",
    "MissingDeviceToken",
    "MissingTopic",
    "PayloadEmpty",
    "TopicDisallowed",
    "PayloadTooLarge",
    "ExpiredProviderToken",
    "InvalidProviderToken",
    "BadCertificate",
    "BadCertificateEnvironment",
    "Forbidden",
    "MissingProviderToken",
    "BadPath",
    "MethodNotAllowed",
    "TooManyRequests",
    "TooManyProviderTokenUpdates",
    "InternalServerError",
    "ServiceUnavailable",
    "Shutdown",
];

/// The APNs status/reason table (`docs/protocol.md` §6). A reason Apple has not
/// documented is [`ErrorClass::Unknown`], whatever its status.
pub(crate) fn classify(status: u16, reason: &str) -> ErrorClass {
    use ErrorClass::*;
    match (status, reason) {
        (410, "Unregistered" | "ExpiredToken" | "") => RemoveRegistration,
        (400, "BadDeviceToken" | "DeviceTokenNotForTopic") => RemoveRegistration,
        (
            400,
            "BadCollapseId" | "BadExpirationDate" | "BadMessageId" | "BadPriority" | "BadTopic"
            | "DuplicateHeaders" | "IdleTimeout" | "InvalidPushType" | "MissingDeviceToken"
            | "MissingTopic" | "PayloadEmpty" | "TopicDisallowed",
        ) => FailNotification,
        (413, "PayloadTooLarge" | "") => FailNotification,
        (403, "ExpiredProviderToken") => RetryNow,
        (
            403,
            "InvalidProviderToken"
            | "BadCertificate"
            | "BadCertificateEnvironment"
            | "Forbidden"
            | "MissingProviderToken",
        ) => ProviderMisconfigured,
        (404, "BadPath" | "") | (405, "MethodNotAllowed" | "") => ProviderMisconfigured,
        (429, "TooManyRequests" | "TooManyProviderTokenUpdates" | "") => Retry,
        (500, "InternalServerError" | "") | (503, "ServiceUnavailable" | "Shutdown" | "") => Retry,
        (502 | 504, _) => Retry,
        _ => Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_reason_table() {
        let table = [
            (410, "Unregistered", ErrorClass::RemoveRegistration),
            (410, "ExpiredToken", ErrorClass::RemoveRegistration),
            (400, "BadDeviceToken", ErrorClass::RemoveRegistration),
            (
                400,
                "DeviceTokenNotForTopic",
                ErrorClass::RemoveRegistration,
            ),
            (400, "BadCollapseId", ErrorClass::FailNotification),
            (400, "PayloadEmpty", ErrorClass::FailNotification),
            (403, "ExpiredProviderToken", ErrorClass::RetryNow),
            (
                403,
                "InvalidProviderToken",
                ErrorClass::ProviderMisconfigured,
            ),
            (403, "BadCertificate", ErrorClass::ProviderMisconfigured),
            (413, "PayloadTooLarge", ErrorClass::FailNotification),
            (429, "TooManyRequests", ErrorClass::Retry),
            (500, "InternalServerError", ErrorClass::Retry),
            (503, "ServiceUnavailable", ErrorClass::Retry),
            (503, "Shutdown", ErrorClass::Retry),
            (429, "TooManyProviderTokenUpdates", ErrorClass::Retry),
            (
                403,
                "BadCertificateEnvironment",
                ErrorClass::ProviderMisconfigured,
            ),
            (
                403,
                "MissingProviderToken",
                ErrorClass::ProviderMisconfigured,
            ),
            (403, "Forbidden", ErrorClass::ProviderMisconfigured),
            (404, "BadPath", ErrorClass::ProviderMisconfigured),
            (405, "MethodNotAllowed", ErrorClass::ProviderMisconfigured),
            (400, "BadExpirationDate", ErrorClass::FailNotification),
            (400, "BadPriority", ErrorClass::FailNotification),
            (400, "BadTopic", ErrorClass::FailNotification),
            (400, "MissingTopic", ErrorClass::FailNotification),
            (400, "TopicDisallowed", ErrorClass::FailNotification),
            (400, "SomethingNew", ErrorClass::Unknown),
            (403, "SomethingNew", ErrorClass::Unknown),
            (418, "", ErrorClass::Unknown),
        ];
        for (status, reason, class) in table {
            assert_eq!(classify(status, reason), class, "{status} {reason}");
        }
    }
}
