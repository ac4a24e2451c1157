-- Prosody 0.12: the pieces that make pushgate the push app server of a host.
-- Tested with Prosody 0.12.3 + prosody-modules (mod_cloud_notify).

-- The component pushgate connects to (XEP-0114). Listen on loopback or a
-- private interface only: the secret is the only thing protecting the port.
component_ports = { 5347 }
component_interfaces = { "127.0.0.1" }

VirtualHost "example.com"
  modules_enabled = {
    "smacks";        -- pushes for hibernated XEP-0198 sessions
    "cloud_notify";  -- XEP-0357, from prosody-modules
  }
  -- mod_cloud_notify: keep the body and sender out of pushes (pushgate never
  -- forwards them anyway); count transient errors generously.
  push_notification_with_body = false
  push_notification_with_sender = false
  push_max_errors = 16

-- The JID and secret must match [component] jid / secret in pushgate.toml.
Component "push.example.com"
  component_secret = "change-me"
