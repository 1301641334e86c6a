//! Sending a rendered [`Mail`]: to a file per mail (default) or over SMTP.
//!
//! The file transport names the file after the order, the template and
//! the Message-ID (`<file_safe_id>.<TEMPLATE>.<hash of the Message-ID>.eml`,
//! see [`file_name`]) and writes it atomically (temporary file, rename), so
//! a reader never sees half a mail. A handler that crashes after sending
//! but before its transaction commits is redelivered and rewrites the same
//! file with the same bytes (rendering is deterministic, Message-ID
//! included): a re-send replaces its own file only. A second, distinct
//! mail for the same order and template (another Message-ID) gets a file of
//! its own instead of overwriting the first, so `choreo reconcile` can see
//! the duplicate. The mail is made durable before the transaction that
//! records it commits ([`Transport::durable_before_commit`]): one
//! `syncfs(2)` of the mail folder's filesystem per consumed batch, instead
//! of two fsyncs per mail, which capped the service at a few hundred mails
//! a second. lettre's own `FileTransport` is not used because it names
//! files by a random UUID.
//!
//! The in-memory mailbox ([`MemoryTransport`]) keeps the same rule — one
//! entry per file name — for the simulation, which counts what a customer
//! would receive without touching the disk.
//!
//! SMTP cannot take a mail back, so there the same crash window can deliver
//! a mail twice (with the same Message-ID, which mail clients deduplicate).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use choreo_outbox::UnitOfWork;

use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::mail::Mail;

/// A failed send. Always worth retrying: disks fill up and mail servers
/// restart, and the mail itself was already rendered successfully.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("writing mail file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("smtp: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("making mail files under {dir} durable: {source}")]
    Flush {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("mail file writer stopped: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The key of the mail folder's flush among a unit of work's
/// before-commit work: one flush however many mails the unit wrote.
const FLUSH_KEY: &str = "mail files durable";

/// Where mails go.
#[derive(Clone, Debug)]
pub enum Transport {
    File(FileTransport),
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// Kept in this process (the simulation); never chosen by [`Transport::new`].
    Memory(MemoryTransport),
}

impl Transport {
    /// SMTP when `smtp_url` is set, else files under `mail_dir`.
    pub fn new(smtp_url: Option<&str>, mail_dir: PathBuf) -> Result<Self, choreo_bus::ConfigError> {
        match smtp_url {
            Some(url) => smtp_from_url(url)
                .map(Transport::Smtp)
                .map_err(|e| choreo_bus::ConfigError(format!("CHOREO_SMTP_URL: {e}"))),
            None => Ok(Transport::File(FileTransport::new(mail_dir))),
        }
    }

    pub async fn send(&self, mail: &Mail) -> Result<(), SendError> {
        match self {
            Transport::File(files) => files.send(mail).await.map(drop),
            Transport::Smtp(smtp) => smtp
                .send(mail.message.clone())
                .await
                .map(drop)
                .map_err(Into::into),
            Transport::Memory(mailbox) => {
                mailbox.send(mail);
                Ok(())
            }
        }
    }

    /// Makes the mails `uow` sent durable before it commits (file
    /// transport; SMTP has handed them over already).
    pub fn durable_before_commit(&self, uow: &mut UnitOfWork<'_>) {
        if let Transport::File(files) = self {
            let dir = files.dir.clone();
            uow.before_commit(FLUSH_KEY, async move {
                FileTransport::flush(dir).await.map_err(|e| e.to_string())
            });
        }
    }
}

/// Parses `smtp://[user[:password]@]host[:port]` (port 25 by default).
///
/// The workspace builds lettre without a TLS feature, and lettre's own
/// `from_url` exists only with one, so the URL is parsed here and the
/// transport built with `builder_dangerous` (plain SMTP, as Mailpit
/// speaks). `smtps://` and `?tls=` are refused rather than silently sent
/// in clear text. Errors never repeat the URL: it may hold a password.
pub fn smtp_from_url(url: &str) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let rest = url
        .strip_prefix("smtp://")
        .ok_or("only smtp:// URLs are supported (this build has no TLS support)")?;
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    if !query.is_empty() {
        return Err("URL parameters (e.g. tls=) are not supported: this build has no TLS".into());
    }
    let authority = rest
        .split_once('/')
        .map_or(rest, |(authority, _)| authority);
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((userinfo, host_port)) => (Some(userinfo), host_port),
        None => (None, authority),
    };
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && !port.contains(']') => (
            host,
            port.parse::<u16>()
                .map_err(|_| "the port is not a number from 0 to 65535".to_owned())?,
        ),
        _ => (host_port, 25),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err("the URL has no host".into());
    }
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host).port(port);
    if let Some(userinfo) = userinfo {
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        builder = builder.credentials(Credentials::new(
            percent_decode(user)?,
            percent_decode(password)?,
        ));
    }
    Ok(builder.build())
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("bad percent-encoding in the user info")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the user info is not UTF-8".to_owned())
}

/// A mailbox in memory with the file transport's naming: sending the same
/// mail again replaces its entry, a mail with another Message-ID adds one.
/// Cheap to clone; clones share the mailbox.
#[derive(Clone, Debug, Default)]
pub struct MemoryTransport {
    mails: Arc<Mutex<BTreeMap<String, SentMail>>>,
}

/// What [`MemoryTransport`] kept of a mail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentMail {
    /// `<file_safe_id>.<TEMPLATE>`, as [`Mail::name`].
    pub name: String,
    pub message_id: String,
    pub recipient: String,
    /// How many times this very mail was sent (re-sends after a crash).
    pub sends: usize,
}

impl MemoryTransport {
    fn send(&self, mail: &Mail) {
        let mut mails = self.mails.lock().unwrap_or_else(|p| p.into_inner());
        mails
            .entry(file_name(&mail.name, &mail.message_id))
            .and_modify(|sent| sent.sends += 1)
            .or_insert_with(|| SentMail {
                name: mail.name.clone(),
                message_id: mail.message_id.clone(),
                recipient: mail.recipient.clone(),
                sends: 1,
            });
    }

    /// Every distinct mail sent so far, by file name.
    pub fn sent(&self) -> Vec<SentMail> {
        let mails = self.mails.lock().unwrap_or_else(|p| p.into_inner());
        mails.values().cloned().collect()
    }
}

/// One `.eml` file per mail, named after the mail, written atomically.
#[derive(Clone, Debug)]
pub struct FileTransport {
    dir: PathBuf,
}

impl FileTransport {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file a mail goes to: see [`file_name`].
    pub fn path_for(&self, mail: &Mail) -> PathBuf {
        self.dir.join(file_name(&mail.name, &mail.message_id))
    }

    /// Writes the mail; returns its path. Sending the same mail (same
    /// Message-ID) again replaces its file, it never adds one; a mail with
    /// another Message-ID gets its own file. The file is visible at once and
    /// durable after [`flush`](Self::flush).
    pub async fn send(&self, mail: &Mail) -> Result<PathBuf, SendError> {
        let path = self.path_for(mail);
        let bytes = mail.message.formatted();
        let dir = self.dir.clone();
        let target = path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&dir, &target, &bytes))
            .await?
            .map_err(|source| SendError::File {
                path: path.clone(),
                source,
            })?;
        Ok(path)
    }

    /// Makes every mail written so far durable, names included: one
    /// `syncfs(2)` of the filesystem holding `dir`.
    pub async fn flush(dir: PathBuf) -> Result<(), SendError> {
        let folder = dir.clone();
        tokio::task::spawn_blocking(move || {
            let folder = std::fs::File::open(&folder)?;
            nix::unistd::syncfs(folder.as_raw_fd()).map_err(std::io::Error::from)
        })
        .await?
        .map_err(|source| SendError::Flush { dir, source })
    }
}

/// `<stem>.<hash>.eml`, `stem` being the mail's `<file_safe_id>.<TEMPLATE>`
/// and `hash` the first 16 hex digits of the SHA-256 of its Message-ID.
///
/// The hash keeps the name deterministic (a re-send lands on the same
/// file) and file-safe whatever the Message-ID holds; a second, different
/// mail for the same order and template gets a file of its own, so a
/// duplicate send can be seen. Readers take order and template from the
/// first two dot-separated parts (the file-safe id escapes every dot).
pub fn file_name(stem: &str, message_id: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(message_id.as_bytes());
    let hash: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{stem}.{hash}.eml")
}

/// Temp file in the same folder (so the rename stays on one filesystem),
/// renamed to its name once complete. Durability is [`FileTransport::flush`].
fn write_atomically(dir: &Path, target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(
        ".{file_name}.{}.tmp",
        uuid::Uuid::new_v4().simple()
    ));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        std::fs::rename(&temp, target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::tests::replica;
    use crate::domain::{Notice, Template};
    use crate::mail::render;

    fn mail(sent_at_ms: i64) -> Mail {
        let notice = Notice {
            template: Template::OrderConfirmed,
            order: replica(),
            reason: None,
        };
        render(&"shop@choreo.local".parse().unwrap(), &notice, sent_at_ms).unwrap()
    }

    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
    }

    #[tokio::test]
    async fn sending_twice_leaves_one_file_with_the_same_content() {
        let dir = tempfile::tempdir().unwrap();
        let transport = FileTransport::new(dir.path().join("mail"));

        let first = transport.send(&mail(1_700_000_000_000)).await.unwrap();
        let content = std::fs::read(&first).unwrap();
        // A redelivery renders the mail again from the same event.
        let second = transport.send(&mail(1_700_000_000_000)).await.unwrap();

        assert_eq!(first, second);
        assert_eq!(
            first,
            dir.path()
                .join("mail/o1.ORDER_CONFIRMED.e41813ee2e6cdbcd.eml")
        );
        assert_eq!(files(&dir.path().join("mail")), vec![first.clone()]);
        assert_eq!(std::fs::read(&second).unwrap(), content);
        let text = String::from_utf8(content).unwrap();
        assert!(
            text.contains("Message-ID: <o1.ORDER_CONFIRMED@choreo>"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_mail_with_another_message_id_gets_a_file_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let transport = FileTransport::new(dir.path().to_owned());
        let first = mail(1_700_000_000_000);
        // The same order and template under another Message-ID: a second,
        // distinct mail, which must not overwrite the first.
        let mut second = first.clone();
        second.message_id = "<o1.ORDER_CONFIRMED.again@choreo>".into();
        second.message = lettre::Message::builder()
            .from("shop@choreo.local".parse().unwrap())
            .to("alice@example.org".parse().unwrap())
            .message_id(Some(second.message_id.clone()))
            .body(String::from("again"))
            .unwrap();

        let a = transport.send(&first).await.unwrap();
        let b = transport.send(&second).await.unwrap();

        assert_ne!(a, b);
        let mut both = vec![a.clone(), b.clone()];
        both.sort();
        assert_eq!(files(dir.path()), both);
        for path in [&a, &b] {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                name.starts_with("o1.ORDER_CONFIRMED.") && name.ends_with(".eml"),
                "{name}"
            );
        }
        let text = std::fs::read_to_string(&b).unwrap();
        assert!(
            text.contains("Message-ID: <o1.ORDER_CONFIRMED.again@choreo>"),
            "{text}"
        );
    }

    #[test]
    fn file_names_hash_the_message_id_with_sha_256() {
        // SHA-256("abc") starts ba7816bf8f01cfea: the names must not
        // change between builds.
        assert_eq!(
            file_name("o%2E1.ORDER_CANCELLED", "abc"),
            "o%2E1.ORDER_CANCELLED.ba7816bf8f01cfea.eml"
        );
        assert_ne!(file_name("o1.T", "<a@x>"), file_name("o1.T", "<b@x>"));
    }

    /// Just enough SMTP to accept one mail; returns what came after DATA.
    async fn fake_smtp_server(listener: tokio::net::TcpListener) -> String {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let (socket, _) = listener.accept().await.unwrap();
        let (read, mut write) = socket.into_split();
        let mut lines = BufReader::new(read).lines();
        write.write_all(b"220 fake ESMTP\r\n").await.unwrap();
        let mut data = String::new();
        let mut in_data = false;
        while let Some(line) = lines.next_line().await.unwrap() {
            if in_data {
                if line == "." {
                    in_data = false;
                    write.write_all(b"250 queued\r\n").await.unwrap();
                } else {
                    data.push_str(&line);
                    data.push('\n');
                }
                continue;
            }
            let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
            let reply: &[u8] = match verb.as_str() {
                "EHLO" | "HELO" => b"250 fake\r\n",
                "DATA" => {
                    in_data = true;
                    b"354 go ahead\r\n"
                }
                "QUIT" => {
                    write.write_all(b"221 bye\r\n").await.unwrap();
                    break;
                }
                _ => b"250 OK\r\n",
            };
            write.write_all(reply).await.unwrap();
        }
        data
    }

    #[tokio::test]
    async fn smtp_transport_delivers_over_plain_smtp() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(fake_smtp_server(listener));
        let dir = tempfile::tempdir().unwrap();
        let url = format!("smtp://127.0.0.1:{port}");
        let transport = Transport::new(Some(&url), dir.path().to_owned()).unwrap();

        transport.send(&mail(0)).await.unwrap();
        let received = tokio::time::timeout(std::time::Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap();
        assert!(
            received.contains("Message-ID: <o1.ORDER_CONFIRMED@choreo>"),
            "{received}"
        );
        assert!(
            received.contains("Subject: Your order o1 is confirmed"),
            "{received}"
        );
        // Nothing went to files.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn transport_choice_follows_the_smtp_url() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Transport::new(None, dir.path().to_owned()),
            Ok(Transport::File(_))
        ));
        for url in [
            "smtp://mailpit:1025",
            "smtp://mailpit",
            "smtp://user:p%40ss@127.0.0.1:2525",
            "smtp://[::1]:1025",
        ] {
            assert!(
                matches!(
                    Transport::new(Some(url), dir.path().to_owned()),
                    Ok(Transport::Smtp(_))
                ),
                "{url}"
            );
        }
        for url in [
            "smtp://mailpit:1025?tls=required",
            "smtp://:25",
            "smtp://h:port",
        ] {
            assert!(
                Transport::new(Some(url), dir.path().to_owned()).is_err(),
                "{url}"
            );
        }
        let refused = Transport::new(Some("smtps://user:hunter2@mail:465"), dir.path().to_owned())
            .unwrap_err();
        assert!(!refused.to_string().contains("hunter2"), "{refused}");
    }
}
