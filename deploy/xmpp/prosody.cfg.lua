-- Prosody 0.12: what makes pushgate the push app server of your hosts.
-- Put these lines in the global section of prosody.cfg.lua (before the first
-- VirtualHost), and add "cloud_notify" (from prosody-modules) and "smacks" to
-- your global modules_enabled. The interop tests run Prosody with this file,
-- Included, and example.com replaced by their own domain.

-- The component port pushgate connects to (XEP-0114). Keep it on loopback or a
-- private interface: the secret is all that protects it.
component_ports = { 5347 }
component_interfaces = { "127.0.0.1" }

-- mod_cloud_notify: pushgate never forwards the body or sender, so there is no
-- reason to send them; with_body = false still marks messages with a body as
-- important (push_notification_important_body), which makes an alert push.
push_notification_with_body = false
push_notification_with_sender = false
-- Non-wait errors before Prosody drops a registration. pushgate answers a
-- non-wait error only when the device is really gone.
push_max_errors = 16

-- Prosody accepts one stream per component. With a pushgate cluster, a node
-- that takes over a dead node's stream replaces it at once instead of being
-- refused until Prosody notices the old one is gone (minutes on a dead host).
component_conflict_resolve = "kick_old"

-- The JID and secret must match [component] jid and secret in pushgate.toml.
Component "push.example.com"
  component_secret = "change-me"
