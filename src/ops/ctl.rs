//! `cabinetd ctl`: a small MQTT client for ops (send a signed command and wait for its result;
//! list the fleet from the retained statuses). Every wait has a deadline; every input from the
//! broker is bounded (message size, number of cabinets or results kept).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::{err, exit, sign_document, OpsError};
use crate::auth::key::SigningKey;

/// Messages larger than this from the broker are ignored (a status or a result is < 1 KiB).
const MAX_MESSAGE: usize = 1024 * 1024;
/// Cabinets listed by `fleet` / results kept by `send all`, at most.
const MAX_ENTRIES: usize = 100_000;
/// `fleet`: retained messages come right after the SUBACK; the list is complete once the broker
/// has been quiet this long.
const QUIET: Duration = Duration::from_millis(500);

/// `cabinetd ctl`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    cabinetd ctl --broker mqtts://mqtt.example.org --ca ca.pem --cert ops.pem --key ops.key \\\n    \
    send dijon-017 light.set --args '{\"target\":\"all\",\"level_percent\":100}' --key sign.pem --kid ops-2026\n  \
    cabinetd ctl --broker mqtt://127.0.0.1 fleet --json\n\n\
    Exit codes: 0 success (send: the command succeeded on every cabinet that answered), 1 failure \
    (broker unreachable, not succeeded, no result before --timeout), 2 usage.")]
pub struct CtlArgs {
    /// Broker URL, mqtt://host[:port] or mqtts://host[:port].
    #[arg(long, value_name = "URL")]
    pub broker: String,
    /// PEM CA bundle of the broker's certificate (mqtts).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// PEM client certificate (mTLS), with --key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub cert: Option<PathBuf>,
    /// PEM private key of --cert (given before the subcommand; `send --key` is the signing key).
    #[arg(
        long = "key",
        id = "tls_key",
        visible_alias = "tls-key",
        value_name = "FILE",
        requires = "cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// MQTT user name.
    #[arg(long)]
    pub username: Option<String>,
    /// File holding the MQTT password.
    #[arg(long, value_name = "FILE", requires = "username")]
    pub password_file: Option<PathBuf>,
    /// Topic prefix P.
    #[arg(long, default_value = crate::config::DEFAULT_TOPIC_PREFIX)]
    pub prefix: String,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// `cabinetd ctl …` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum CtlCommand {
    /// Publish a signed command on P/CABINET/cmd (P/all/cmd for `all`) and wait for its result.
    #[command(
        after_help = "Prints each result as a JSON line {\"cabinet\",\"id\",\"status\",\"reason\",\"ts\"}. \
        For `all`, waits the whole --timeout and prints every cabinet's result.\n\n\
        Example:\n  cabinetd ctl --broker mqtt://127.0.0.1 send dijon-017 light.release \
        --args '{\"target\":\"all\"}' --key ops.pem --kid ops-2026\n\n\
        Exit codes: 0 succeeded (for all: at least one result, all succeeded), 1 otherwise."
    )]
    Send(SendArgs),
    /// List every cabinet from its retained P/C/status: online, mode, version, config version,
    /// last seen.
    #[command(
        after_help = "Example:\n  cabinetd ctl --broker mqtt://127.0.0.1 fleet --json\n\n\
    Exit codes: 0 listed (possibly empty), 1 broker unreachable."
    )]
    Fleet {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
        /// Longest time to collect the statuses.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        wait: Duration,
    },
}

/// `cabinetd ctl send`.
#[derive(clap::Args, Debug)]
pub struct SendArgs {
    /// Cabinet id, or `all`.
    pub cabinet: String,
    /// Action, e.g. `light.set`.
    pub action: String,
    /// Arguments, a JSON object.
    #[arg(long, default_value = "{}")]
    pub args: String,
    /// Signing key (PKCS#8 PEM).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Its key id.
    #[arg(long, value_name = "KID")]
    pub kid: String,
    /// Command id (default: a fresh `ctl-UUID`).
    #[arg(long)]
    pub id: Option<String>,
    /// Validity of the command (its expires_at).
    #[arg(long, default_value = "5min", value_parser = humantime::parse_duration)]
    pub expires: Duration,
    /// How long to wait for the result.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Run `cabinetd ctl`.
pub fn run(args: &CtlArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return exit("ctl", Err(err(format!("cannot start the runtime: {e}")))),
    };
    match &args.command {
        CtlCommand::Send(send) => match rt.block_on(send_command(args, send)) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => exit("ctl send", Err(e)),
        },
        CtlCommand::Fleet { json, wait } => {
            exit("ctl fleet", rt.block_on(fleet(args, *json, *wait)))
        }
    }
}

struct Session {
    client: AsyncClient,
    events: EventLoop,
    host: String,
}

impl Session {
    /// Connect and wait for the CONNACK.
    async fn connect(args: &CtlArgs, deadline: Instant) -> Result<Session, OpsError> {
        let broker =
            crate::config::parse_broker(&args.broker).map_err(|e| err(format!("--broker: {e}")))?;
        let id = format!("cabinetd-ctl-{}", uuid::Uuid::new_v4().simple());
        let mut o = MqttOptions::new(id, broker.host.clone(), broker.port);
        o.set_clean_session(true);
        o.set_keep_alive(Duration::from_secs(15));
        o.set_max_packet_size(16 * 1024 * 1024, 1024 * 1024);
        if broker.tls {
            let ca = args
                .ca
                .as_ref()
                .ok_or_else(|| err("--broker mqtts:// needs --ca FILE"))?;
            let read =
                |p: &PathBuf| std::fs::read(p).map_err(|e| err(format!("{}: {e}", p.display())));
            let ca = read(ca)?;
            let client = match (&args.cert, &args.tls_key) {
                (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
                _ => None,
            };
            let material = crate::uplink::tls::client_config(
                &ca,
                client.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
            )
            .map_err(|e| err(e.to_string()))?;
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                material.config,
            )));
        } else if args.cert.is_some() || args.ca.is_some() {
            return Err(err("--ca/--cert/--key need an mqtts:// broker"));
        }
        if let Some(user) = &args.username {
            let password = match &args.password_file {
                Some(p) => std::fs::read_to_string(p)
                    .map_err(|e| err(format!("{}: {e}", p.display())))?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
                None => String::new(),
            };
            o.set_credentials(user.clone(), password);
        }
        let (client, events) = AsyncClient::new(o, 16);
        let mut s = Session {
            client,
            events,
            host: broker.host,
        };
        s.wait_for(deadline, "the broker's CONNACK", |p| {
            matches!(p, Packet::ConnAck(_))
        })
        .await?;
        Ok(s)
    }

    /// Poll until `want` matches an incoming packet.
    async fn wait_for(
        &mut self,
        deadline: Instant,
        what: &str,
        mut want: impl FnMut(&Packet) -> bool,
    ) -> Result<Packet, OpsError> {
        loop {
            match tokio::time::timeout_at(deadline, self.events.poll()).await {
                Err(_) => return Err(err(format!("timed out waiting for {what}"))),
                Ok(Err(e)) => {
                    return Err(err(format!(
                        "broker {}: {}",
                        self.host,
                        crate::uplink::tls::describe(&e, &self.host)
                    )))
                }
                Ok(Ok(Event::Incoming(p))) if want(&p) => return Ok(p),
                Ok(Ok(_)) => {}
            }
        }
    }

    async fn subscribe(&mut self, filter: &str, deadline: Instant) -> Result<(), OpsError> {
        self.client
            .try_subscribe(filter, QoS::AtLeastOnce)
            .map_err(|e| err(e.to_string()))?;
        let p = self
            .wait_for(deadline, "the SUBACK", |p| matches!(p, Packet::SubAck(_)))
            .await?;
        if let Packet::SubAck(ack) = p {
            if ack
                .return_codes
                .iter()
                .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
            {
                return Err(err(format!(
                    "the broker refused the subscription to {filter} (ACL?)"
                )));
            }
        }
        Ok(())
    }

    async fn disconnect(mut self) {
        let _ = self.client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while self.events.poll().await.is_ok() {}
        })
        .await;
    }
}

/// The zstd frame magic (SPEC v1.1): JSON never starts with these bytes.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The JSON envelope of a published payload: as is, or the content of its one zstd frame
/// (`uplink.compression = "zstd"`), decompressed to at most [`MAX_MESSAGE`] bytes (a frame
/// claiming more is refused, not allocated).
fn envelope_json(payload: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, &'static str> {
    use std::io::Read;
    if !payload.starts_with(&ZSTD_MAGIC) {
        return Ok(std::borrow::Cow::Borrowed(payload));
    }
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(payload)
        .map_err(|_| "a zstd payload that does not decode")?
        .single_frame()
        .take(MAX_MESSAGE as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| "a zstd payload that does not decode")?;
    if out.len() > MAX_MESSAGE {
        return Err("a zstd payload larger than 1 MiB once decompressed");
    }
    Ok(std::borrow::Cow::Owned(out))
}

/// The records of a `cmd/result` envelope (JSON, or zstd-compressed JSON).
fn result_records(payload: &[u8]) -> Result<Vec<Value>, &'static str> {
    let json = envelope_json(payload)?;
    let env: Value = serde_json::from_slice(&json).map_err(|_| "not JSON")?;
    Ok(env["records"].as_array().cloned().unwrap_or_default())
}

/// The cabinet of a topic `P/C/…`.
fn cabinet_of<'a>(topic: &'a str, prefix: &str) -> Option<&'a str> {
    topic
        .strip_prefix(prefix)?
        .strip_prefix('/')?
        .split('/')
        .next()
}

async fn send_command(args: &CtlArgs, send: &SendArgs) -> Result<bool, OpsError> {
    let cmd_args: Value =
        serde_json::from_str(&send.args).map_err(|e| err(format!("--args: not JSON: {e}")))?;
    if !cmd_args.is_object() {
        return Err(err("--args: must be a JSON object"));
    }
    let id = send
        .id
        .clone()
        .unwrap_or_else(|| format!("ctl-{}", uuid::Uuid::new_v4()));
    let key = SigningKey::load(&send.key).map_err(|e| err(e.to_string()))?;
    let doc = json!({"id": id, "action": send.action, "args": cmd_args});
    let token = sign_document(
        doc.to_string().as_bytes(),
        &key,
        &send.kid,
        Some(&send.cabinet),
        Some(send.expires),
        SystemTime::now(),
    )?;
    let all = send.cabinet == "all";
    let prefix = &args.prefix;
    let (cmd_topic, result_filter) = if all {
        (
            format!("{prefix}/all/cmd"),
            format!("{prefix}/+/cmd/result"),
        )
    } else {
        (
            format!("{prefix}/{}/cmd", send.cabinet),
            format!("{prefix}/{}/cmd/result", send.cabinet),
        )
    };
    let deadline = Instant::now() + send.timeout;
    let mut s = Session::connect(args, deadline).await?;
    // Subscribed before publishing, so the result cannot be missed.
    s.subscribe(&result_filter, deadline).await?;
    s.client
        .try_publish(
            cmd_topic.clone(),
            QoS::AtLeastOnce,
            false,
            token.into_bytes(),
        )
        .map_err(|e| err(e.to_string()))?;
    s.wait_for(deadline, "the broker's PUBACK", |p| {
        matches!(p, Packet::PubAck(_))
    })
    .await?;
    eprintln!(
        "sent {id} ({}) on {cmd_topic}; waiting up to {}",
        send.action,
        humantime::format_duration(send.timeout)
    );
    let mut results: BTreeMap<String, Value> = BTreeMap::new();
    loop {
        let p = match s
            .wait_for(deadline, "the result", |p| matches!(p, Packet::Publish(_)))
            .await
        {
            Ok(p) => p,
            Err(e) if e.0.starts_with("timed out") => break,
            Err(e) => return Err(e),
        };
        let Packet::Publish(msg) = p else { continue };
        if msg.payload.len() > MAX_MESSAGE {
            continue;
        }
        let cabinet = cabinet_of(&msg.topic, prefix).unwrap_or("?").to_owned();
        let records = match result_records(&msg.payload) {
            Ok(r) => r,
            Err(why) => {
                eprintln!("{cabinet}: {why}");
                continue;
            }
        };
        for r in records.into_iter().filter(|r| r["id"] == id.as_str()) {
            let line = json!({"cabinet": cabinet, "id": id, "status": r["status"], "reason": r["reason"], "ts": r["ts"]});
            println!("{line}");
            if results.len() < MAX_ENTRIES {
                results.insert(cabinet.clone(), r["status"].clone());
            }
        }
        if !all && !results.is_empty() {
            break;
        }
    }
    s.disconnect().await;
    if results.is_empty() {
        return Err(err(format!(
            "no result for {id} within {}",
            humantime::format_duration(send.timeout)
        )));
    }
    Ok(results.values().all(|s| s == "succeeded"))
}

/// One cabinet of `fleet`.
fn fleet_entry(cabinet: &str, status: &Value) -> Value {
    json!({
        "cabinet": cabinet,
        "online": status["online"].as_bool(),
        "mode": status["mode"],
        "version": status["version"],
        "config_version": status["config_version"],
        "boot_id": status["boot_id"],
        // Online and clean-stop statuses carry `ts`, the will carries `since`.
        "last_seen": status.get("ts").or_else(|| status.get("since")).cloned().unwrap_or(Value::Null),
    })
}

/// The fleet as a table for a person.
pub fn fleet_table(entries: &[Value]) -> String {
    let cell = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        Value::Bool(true) => "online".into(),
        Value::Bool(false) => "OFFLINE".into(),
        other => other.to_string(),
    };
    let rows: Vec<[String; 6]> = entries
        .iter()
        .map(|e| {
            [
                cell(&e["cabinet"]),
                cell(&e["online"]),
                cell(&e["mode"]),
                cell(&e["version"]),
                cell(&e["config_version"]),
                cell(&e["last_seen"]),
            ]
        })
        .collect();
    let head = ["CABINET", "STATE", "MODE", "VERSION", "CONFIG", "LAST SEEN"].map(String::from);
    let mut width = head.clone().map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(&head).chain(&rows) {
        let line: Vec<String> = r
            .iter()
            .zip(width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    let online = entries.iter().filter(|e| e["online"] == true).count();
    out.push_str(&format!("{} cabinet(s), {online} online\n", entries.len()));
    out
}

async fn fleet(args: &CtlArgs, as_json: bool, wait: Duration) -> Result<(), OpsError> {
    let deadline = Instant::now() + wait;
    let mut s = Session::connect(args, deadline).await?;
    s.subscribe(&format!("{}/+/status", args.prefix), deadline)
        .await?;
    let mut statuses: BTreeMap<String, Value> = BTreeMap::new();
    loop {
        let quiet = (Instant::now() + QUIET).min(deadline);
        let p = match s
            .wait_for(quiet, "statuses", |p| matches!(p, Packet::Publish(_)))
            .await
        {
            Ok(p) => p,
            Err(e) if e.0.starts_with("timed out") => break,
            Err(e) => return Err(e),
        };
        let Packet::Publish(msg) = p else { continue };
        if msg.payload.len() > MAX_MESSAGE {
            continue;
        }
        let Some(cabinet) = cabinet_of(&msg.topic, &args.prefix) else {
            continue;
        };
        let Ok(status) = serde_json::from_slice::<Value>(&msg.payload) else {
            continue;
        };
        if statuses.len() < MAX_ENTRIES || statuses.contains_key(cabinet) {
            statuses.insert(cabinet.to_owned(), status);
        }
    }
    s.disconnect().await;
    let entries: Vec<Value> = statuses.iter().map(|(c, st)| fleet_entry(c, st)).collect();
    if as_json {
        println!("{}", Value::Array(entries));
    } else {
        print!("{}", fleet_table(&entries));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_rows_from_online_offline_and_will_statuses() {
        let on = json!({"online":true,"cabinet":"a","boot_id":"b","version":"0.2.0","config_version":"v7","mode":"connected","ts":"2026-11-26T08:00:00.123Z"});
        let will =
            json!({"online":false,"cabinet":"b","boot_id":"b","since":"2026-11-25T08:00:00.000Z"});
        let entries = vec![fleet_entry("a", &on), fleet_entry("b", &will)];
        assert_eq!(entries[1]["last_seen"], "2026-11-25T08:00:00.000Z");
        assert_eq!(entries[1]["version"], Value::Null);
        let t = fleet_table(&entries);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("CABINET  STATE    MODE"), "{t}");
        assert!(
            lines[1].contains("online") && lines[1].contains("v7"),
            "{t}"
        );
        assert!(
            lines[2].contains("OFFLINE") && lines[2].contains("2026-11-25"),
            "{t}"
        );
        assert_eq!(lines[3], "2 cabinet(s), 1 online");
    }

    #[test]
    fn result_envelopes() {
        let r = result_records(
            br#"{"cabinet":"a","stream":"results","records":[{"id":"x","status":"succeeded"}]}"#,
        )
        .unwrap();
        assert_eq!(r[0]["id"], "x");
        assert!(result_records(&[0x28, 0xb5, 0x2f, 0xfd, 0]).is_err());
        // uplink.compression = "zstd" (SPEC v1.1): one frame holding the same envelope.
        let json =
            br#"{"cabinet":"a","stream":"results","records":[{"id":"z","status":"failed"}]}"#;
        let frame = zstd::bulk::compress(json, 3).unwrap();
        assert_eq!(frame[..4], ZSTD_MAGIC);
        let r = result_records(&frame).unwrap();
        assert_eq!(
            (r[0]["id"].as_str(), r[0]["status"].as_str()),
            (Some("z"), Some("failed"))
        );
        // A bomb: 64 MiB of zeros in a few KiB is refused past 1 MiB.
        let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 19).unwrap();
        assert!(bomb.len() < 64 << 10);
        assert_eq!(
            result_records(&bomb).unwrap_err(),
            "a zstd payload larger than 1 MiB once decompressed"
        );
        assert_eq!(
            cabinet_of("cabinets/v1/dijon-017/cmd/result", "cabinets/v1"),
            Some("dijon-017")
        );
        assert_eq!(cabinet_of("other/x", "cabinets/v1"), None);
    }
}
