//! The deployment the forms and REST targets run against: every command
//! dialect offered, an APNs and an FCM provider (their key files are never
//! read: nothing here builds a provider).

use pushgate::app::AppContext;
use std::sync::OnceLock;

const CONFIG: &str = r#"
[component]
jid = "push.example.com"
secret = "s"
[[component.servers]]
host = "127.0.0.1"
[commands]
p2_fcm = "fcm"
p2_apns = "apns"
appserver = { apns = "apns", fcm = "fcm" }
[[providers]]
id = "apns"
kind = "apns"
topic = "org.example.app"
team_id = "TEAM123456"
key_id = "KEY1234567"
key_file = "/nonexistent/key.p8"
[[providers]]
id = "fcm"
kind = "fcm"
service_account_file = "/nonexistent/sa.json"
"#;

/// Built once per process.
pub fn context() -> &'static AppContext {
    static CONTEXT: OnceLock<AppContext> = OnceLock::new();
    CONTEXT.get_or_init(|| {
        let config = pushgate::config::load_from_str(CONFIG, "fuzz", Vec::new())
            .expect("the fuzz configuration is valid");
        AppContext::from_config(&config)
    })
}
