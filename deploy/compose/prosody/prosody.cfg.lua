-- Prosody for the compose stack: users on localhost, pushgate as component
-- push.localhost, logs on stdout. The push settings are those of
-- deploy/xmpp/prosody.cfg.lua, except that the component port listens on
-- the compose network (the gateways are other containers).
pidfile = "/tmp/prosody.pid"
log = { { levels = { min = "info" }, to = "console" } }
daemonize = false
modules_enabled = {
  "roster"; "saslauth"; "disco"; "carbons"; "pep"; "ping";
  "mam"; "smacks"; "cloud_notify";
}
c2s_require_encryption = false
authentication = "internal_hashed"
storage = "internal"

component_ports = { 5347 }
component_interfaces = { "*" }
push_notification_with_body = false
push_notification_with_sender = false
push_max_errors = 16
component_conflict_resolve = "kick_old"

VirtualHost "localhost"

Component "push.localhost"
  component_secret = "compose-component-secret"
