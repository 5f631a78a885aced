//! Failure notifications: email over SMTP, to channels named in a config file.
//!
//! ```text
//! config (--notifications-config FILE, else $STRATA_NOTIFICATIONS_CONFIG,
//!         else /etc/strata/notifications.json):
//!   {"channels": {"NAME": {"type": "email", "smtp_server": "HOST:PORT",
//!                          "from": ADDR, "to": [ADDR], "cc": [ADDR], "subject": TEXT}}}
//!
//! task_data.notifications.on_failure[i] = {channel, data: {from, to, cc, subject}}
//!   each key of data overrides the channel's default
//!
//! the task fails → for each entry: compose → EHLO, MAIL FROM, RCPT TO (to + cc),
//!                  DATA (dot-stuffed), QUIT → reported; the task's result stays
//! ```
//!
//! A small client rather than a mail crate: strata sends one plain-text
//! message to a relay it is told about; no TLS, no authentication (a relay
//! on the local network, as debusine's deployments use).

use super::model::{EmailData, Invalid, Notification};
use base64::Engine;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The subject when neither the task nor the channel gives one.
pub const DEFAULT_SUBJECT: &str = "WorkRequest $work_request_id completed in $work_request_result";

/// Where the config is when no flag names it.
pub fn default_config_path() -> PathBuf {
    std::env::var_os("STRATA_NOTIFICATIONS_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/strata/notifications.json"))
}

/// The notifications config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Channel name → channel.
    pub channels: BTreeMap<String, Channel>,
}

/// A channel: for now, email through one SMTP server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    /// Only `email`.
    #[serde(rename = "type")]
    pub ty: ChannelType,
    /// `host:port` of the SMTP server.
    pub smtp_server: String,
    /// Default sender.
    pub from: String,
    /// Default recipients.
    #[serde(default)]
    pub to: Vec<String>,
    /// Default copies.
    #[serde(default)]
    pub cc: Vec<String>,
    /// Default subject.
    #[serde(default)]
    pub subject: Option<String>,
}

/// Channel types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelType {
    /// SMTP email.
    Email,
}

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("notifications config {path}: {message}")]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

impl Config {
    /// Reads and checks the config at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let fail = |message: String| ConfigError {
            path: path.to_path_buf(),
            message,
        };
        let text = fs_err::read_to_string(path).map_err(|e| {
            fail(format!(
                "{e}\n    hint: name it with --notifications-config FILE or $STRATA_NOTIFICATIONS_CONFIG"
            ))
        })?;
        let de = &mut serde_json::Deserializer::from_str(&text);
        let config: Config = serde_path_to_error::deserialize(de)
            .map_err(|e| fail(format!("{}: {}", e.path(), e.inner())))?;
        for (name, ch) in &config.channels {
            let at = |key: &str| format!("channels.{name}.{key}");
            let addrs = std::iter::once(("from", &ch.from))
                .chain(ch.to.iter().map(|a| ("to", a)))
                .chain(ch.cc.iter().map(|a| ("cc", a)));
            for (key, a) in addrs {
                if !super::model::is_email(a) {
                    return Err(fail(format!("{}: `{a}` is not an email address", at(key))));
                }
            }
            if ch
                .smtp_server
                .rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            {
                return Err(fail(format!(
                    "{}: `{}` is not HOST:PORT",
                    at("smtp_server"),
                    ch.smtp_server
                )));
            }
            if ch
                .subject
                .as_deref()
                .is_some_and(|s| s.contains(['\r', '\n']))
            {
                return Err(fail(format!("{}: a subject is one line", at("subject"))));
            }
        }
        Ok(config)
    }

    /// The message each entry sends; an unknown channel or an email nobody
    /// addressed is an error naming the entry.
    pub fn compose(&self, entries: &[Notification], path: &Path) -> Result<Vec<Email>, Invalid> {
        entries
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let at = format!("task_data.notifications.on_failure[{i}]");
                let ch = self.channels.get(&n.channel).ok_or_else(|| Invalid {
                    path: format!("{at}.channel"),
                    message: format!(
                        "no channel `{}` in {} (it has: {})",
                        n.channel,
                        path.display(),
                        self.channels.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                })?;
                let data = n.data.clone().unwrap_or_default();
                let EmailData {
                    from,
                    to,
                    cc,
                    subject,
                } = data;
                let email = Email {
                    channel: n.channel.clone(),
                    server: ch.smtp_server.clone(),
                    from: from.unwrap_or_else(|| ch.from.clone()),
                    to: to.unwrap_or_else(|| ch.to.clone()),
                    cc: cc.unwrap_or_else(|| ch.cc.clone()),
                    subject: subject
                        .or_else(|| ch.subject.clone())
                        .unwrap_or_else(|| DEFAULT_SUBJECT.to_owned()),
                };
                if email.to.is_empty() {
                    return Err(Invalid {
                        path: format!("{at}.data.to"),
                        message: format!(
                            "no recipients: neither the task nor channel `{}` gives `to`",
                            n.channel
                        ),
                    });
                }
                Ok(email)
            })
            .collect()
    }
}

/// One message, before substitution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    /// The channel it goes through.
    pub channel: String,
    /// `host:port`.
    pub server: String,
    /// Sender.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// Copies.
    pub cc: Vec<String>,
    /// Subject template.
    pub subject: String,
}

/// Replaces `${work_request_id}`, `${work_request_result}`, and the bare
/// `$work_request_id` / `$work_request_result` where no identifier character
/// follows (so `$work_request_idx` stays as it is). Nothing else changes.
pub fn substitute(template: &str, id: &str, result: &str) -> String {
    let vars = [("work_request_id", id), ("work_request_result", result)];
    let mut out = String::new();
    let mut rest = template;
    'scan: while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        for (name, value) in vars {
            let braced = format!("{{{name}}}");
            if let Some(tail) = after.strip_prefix(braced.as_str()) {
                out.push_str(value);
                rest = tail;
                continue 'scan;
            }
            if let Some(tail) = after.strip_prefix(name)
                && !tail
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_')
            {
                out.push_str(value);
                rest = tail;
                continue 'scan;
            }
        }
        out.push('$');
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Why a message was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection.
    #[error("cannot reach {server}: {detail}")]
    Connect {
        /// `host:port`.
        server: String,
        /// Why.
        detail: String,
    },
    /// The server refused a step.
    #[error("{server} answered `{reply}` to {step}")]
    Refused {
        /// `host:port`.
        server: String,
        /// The command.
        step: String,
        /// Its reply.
        reply: String,
    },
    /// The connection broke.
    #[error("talking to {server}: {detail}")]
    Io {
        /// `host:port`.
        server: String,
        /// What.
        detail: String,
    },
}

/// Sends `email` for work request `id`, which ended in `result`, with `body`.
pub fn send(
    email: &Email,
    id: &str,
    result: &str,
    body: &str,
    timeout: Duration,
) -> Result<(), SendError> {
    let server = email.server.clone();
    let io = |e: std::io::Error| SendError::Io {
        server: server.clone(),
        detail: e.to_string(),
    };
    let addrs: Vec<_> = email
        .server
        .to_socket_addrs()
        .map_err(|e| SendError::Connect {
            server: server.clone(),
            detail: e.to_string(),
        })?
        .collect();
    let mut last = String::from("no address");
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e.to_string(),
        }
    }
    let stream = stream.ok_or_else(|| SendError::Connect {
        server: server.clone(),
        detail: last,
    })?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut smtp = Smtp {
        reader: BufReader::new(stream.try_clone().map_err(io)?),
        writer: stream,
        server: server.clone(),
    };
    smtp.expect("the greeting", None, 220)?;
    let hostname = fs_err::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
        })
        .unwrap_or_else(|| "localhost".to_owned());
    if smtp
        .expect("EHLO", Some(&format!("EHLO {hostname}")), 250)
        .is_err()
    {
        smtp.expect("HELO", Some(&format!("HELO {hostname}")), 250)?;
    }
    smtp.expect(
        "MAIL FROM",
        Some(&format!("MAIL FROM:<{}>", email.from)),
        250,
    )?;
    for rcpt in email.to.iter().chain(&email.cc) {
        smtp.expect("RCPT TO", Some(&format!("RCPT TO:<{rcpt}>")), 250)?;
    }
    smtp.expect("DATA", Some("DATA"), 354)?;
    let message = message(email, id, result, body);
    smtp.writer
        .write_all(dot_stuff(&message).as_bytes())
        .map_err(io)?;
    smtp.expect("the message", Some("."), 250)?;
    // The message is accepted; a server that hangs up without answering QUIT
    // changes nothing.
    let _ = smtp.expect("QUIT", Some("QUIT"), 221);
    Ok(())
}

struct Smtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    server: String,
}

impl Smtp {
    /// Sends `command` (if any) and reads the reply, which must be `code`
    /// (251 counts as 250: a forwarded recipient).
    fn expect(&mut self, step: &str, command: Option<&str>, code: u16) -> Result<(), SendError> {
        let io = |e: std::io::Error| SendError::Io {
            server: self.server.clone(),
            detail: format!("{step}: {e}"),
        };
        if let Some(c) = command {
            self.writer
                .write_all(format!("{c}\r\n").as_bytes())
                .map_err(io)?;
        }
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).map_err(io)? == 0 {
                return Err(SendError::Io {
                    server: self.server.clone(),
                    detail: format!("{step}: the server closed the connection"),
                });
            }
            let line = line.trim_end();
            reply.push_str(line);
            // `250-…` continues a reply, `250 …` (or a bare code) ends it.
            if line.len() < 4 || line.as_bytes()[3] == b' ' {
                break;
            }
            reply.push(' ');
        }
        let got: u16 = reply.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        if got == code || (code == 250 && got == 251) {
            Ok(())
        } else {
            Err(SendError::Refused {
                server: self.server.clone(),
                step: step.to_owned(),
                reply,
            })
        }
    }
}

/// The message text: headers, blank line, body; CRLF line ends.
fn message(email: &Email, id: &str, result: &str, body: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut headers = vec![
        format!("From: {}", email.from),
        format!("To: {}", email.to.join(", ")),
    ];
    if !email.cc.is_empty() {
        headers.push(format!("Cc: {}", email.cc.join(", ")));
    }
    headers.extend([
        format!(
            "Subject: {}",
            encode_header(&substitute(&email.subject, id, result))
        ),
        format!("Date: {}", rfc2822(now)),
        format!("Message-ID: <{id}.{now}.{}@strata>", std::process::id()),
        "MIME-Version: 1.0".to_owned(),
        "Content-Type: text/plain; charset=utf-8".to_owned(),
        "Content-Transfer-Encoding: 8bit".to_owned(),
        format!("X-Strata-Work-Request: {id}"),
        format!("X-Strata-Work-Request-Result: {result}"),
    ]);
    let mut text = headers.join("\r\n");
    text.push_str("\r\n\r\n");
    for line in body.lines() {
        text.push_str(line);
        text.push_str("\r\n");
    }
    text
}

/// Lines starting with `.` get another one (RFC 5321 4.5.2).
fn dot_stuff(message: &str) -> String {
    let mut out = String::with_capacity(message.len() + 16);
    for line in message.split_inclusive("\r\n") {
        if line.starts_with('.') {
            out.push('.');
        }
        out.push_str(line);
    }
    if !out.ends_with("\r\n") {
        out.push_str("\r\n");
    }
    out
}

/// A header value as is when ASCII, else RFC 2047 base64 words.
fn encode_header(value: &str) -> String {
    if value.is_ascii() {
        return value.to_owned();
    }
    format!(
        "=?utf-8?b?{}?=",
        base64::engine::general_purpose::STANDARD.encode(value.as_bytes())
    )
}

/// `Tue, 14 Nov 2023 22:13:20 +0000`.
fn rfc2822(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = crate::clock::Utc::from_unix(secs);
    let (h, m, s) = t.hms;
    format!(
        "{}, {:02} {} {} {h:02}:{m:02}:{s:02} +0000",
        DAYS[t.weekday as usize],
        t.day,
        MONTHS[(t.month - 1) as usize],
        t.year
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution_follows_the_rules() {
        let s = |t| substitute(t, "42", "failure");
        assert_eq!(s(DEFAULT_SUBJECT), "WorkRequest 42 completed in failure");
        assert_eq!(
            s("${work_request_id}x $work_request_result!"),
            "42x failure!"
        );
        assert_eq!(
            s("$work_request_idx $work_request_id_2 $$ $other"),
            "$work_request_idx $work_request_id_2 $$ $other"
        );
        assert_eq!(s("a$work_request_id"), "a42");
        assert_eq!(s("$work_request_idé"), "$work_request_idé");
        assert_eq!(s("trailing $"), "trailing $");
    }

    #[test]
    fn dates_and_dots() {
        assert_eq!(rfc2822(1_700_000_000), "Tue, 14 Nov 2023 22:13:20 +0000");
        assert_eq!(rfc2822(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(dot_stuff("a\r\n.b\r\n..c\r\n"), "a\r\n..b\r\n...c\r\n");
        assert_eq!(encode_header("héllo"), "=?utf-8?b?aMOpbGxv?=");
    }
}
