//! Reading Communication's mail folder: which mails exist for which order
//! and template, counted by Message-ID.
//!
//! The file transport names a mail `<file_safe_id>.<TEMPLATE>.<hash of the
//! Message-ID>.eml` (older builds: `<file_safe_id>.<TEMPLATE>.eml`), so a
//! re-send of the same mail replaces its own file while a second, distinct
//! mail gets a file of its own. Order and template come from the name (the
//! file-safe id escapes every `.`, so the first two dot-separated parts are
//! unambiguous); what counts is the distinct `Message-ID` headers, so the
//! same mail under an old and a new name is still one mail.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::ErrorKind;
use std::path::Path;

use anyhow::Context;

/// Distinct Message-IDs per order (by file-safe id) and template.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailFolder {
    by_order: HashMap<String, BTreeMap<String, BTreeSet<String>>>,
}

impl MailFolder {
    /// Reads every `.eml` in `dir` once. A folder that does not exist holds
    /// no mail; a file that vanishes while being read is skipped.
    pub fn read(dir: &Path) -> anyhow::Result<Self> {
        let mut folder = Self::default();
        let entries = match std::fs::read_dir(dir) {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(folder),
            other => other.with_context(|| format!("listing mail folder {}", dir.display()))?,
        };
        for entry in entries {
            let entry = entry.with_context(|| format!("listing mail folder {}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if parse_name(&name).is_none() {
                continue;
            }
            let path = entry.path();
            match std::fs::read(&path) {
                Ok(bytes) => folder.add(&name, &String::from_utf8_lossy(&bytes)),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("reading mail {}", path.display()))
                }
            }
        }
        Ok(folder)
    }

    /// Records the mail file `name` holding `text`; names that are not a
    /// mail of the file transport are ignored. A mail without a Message-ID
    /// counts once per file.
    pub fn add(&mut self, name: &str, text: &str) {
        let Some((order, template)) = parse_name(name) else {
            return;
        };
        let id = message_id(text).unwrap_or_else(|| format!("(no Message-ID: {name})"));
        self.by_order
            .entry(order.to_owned())
            .or_default()
            .entry(template.to_owned())
            .or_default()
            .insert(id);
    }

    /// Distinct Message-IDs per template for `order_id`.
    pub fn counts(&self, order_id: &str) -> BTreeMap<String, usize> {
        let key = choreo_events::contract::file_safe_id(order_id);
        self.by_order
            .get(&key)
            .map(|templates| {
                templates
                    .iter()
                    .map(|(t, ids)| (t.clone(), ids.len()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// `(file_safe_id, TEMPLATE)` of `<file_safe_id>.<TEMPLATE>[.<hash>].eml`;
/// `None` for anything else (temporary files start with a dot).
fn parse_name(name: &str) -> Option<(&str, &str)> {
    let stem = name.strip_suffix(".eml")?;
    let mut parts = stem.split('.');
    let order = parts.next().filter(|p| !p.is_empty())?;
    let template = parts.next().filter(|p| !p.is_empty())?;
    match (parts.next(), parts.next()) {
        (None, _) => Some((order, template)),
        (Some(hash), None) if !hash.is_empty() => Some((order, template)),
        _ => None,
    }
}

/// The `Message-ID` header of a mail, unfolded and trimmed; only the header
/// block (up to the first empty line) is searched.
fn message_id(text: &str) -> Option<String> {
    let mut found: Option<String> = None;
    let mut in_message_id = false;
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if in_message_id {
                if let Some(value) = found.as_mut() {
                    value.push_str(line.trim());
                }
            }
            continue;
        }
        in_message_id = false;
        if let Some((name, value)) = line.split_once(':') {
            if found.is_none() && name.trim().eq_ignore_ascii_case("message-id") {
                found = Some(value.trim().to_owned());
                in_message_id = true;
            }
        }
    }
    found.filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(message_id: &str) -> String {
        format!("From: shop@choreo.local\r\nMessage-ID: {message_id}\r\nSubject: x\r\n\r\nbody\r\n")
    }

    #[test]
    fn names_give_order_and_template() {
        assert_eq!(
            parse_name("o1.ORDER_CONFIRMED.eml"),
            Some(("o1", "ORDER_CONFIRMED"))
        );
        assert_eq!(
            parse_name("o%2E1.ORDER_CANCELLED.0123abcd.eml"),
            Some(("o%2E1", "ORDER_CANCELLED"))
        );
        for other in [
            ".o1.ORDER_CONFIRMED.eml.1234.tmp",
            "o1.ORDER_CONFIRMED.a.b.eml",
            "o1.ORDER_CONFIRMED..eml",
            "o1.eml",
            "notes.txt",
            ".eml",
        ] {
            assert_eq!(parse_name(other), None, "{other}");
        }
    }

    #[test]
    fn the_message_id_header_is_found_case_and_folding_aside() {
        assert_eq!(
            message_id(&mail("<o1.X@choreo>")).as_deref(),
            Some("<o1.X@choreo>")
        );
        let folded = "Subject: a\r\nmessage-id:\r\n <o1.X@choreo>\r\n\r\n";
        assert_eq!(message_id(folded).as_deref(), Some("<o1.X@choreo>"));
        // A Message-ID line in the body is not a header.
        assert_eq!(message_id("Subject: a\r\n\r\nMessage-ID: <b@c>\r\n"), None);
        assert_eq!(message_id("Message-ID:   \r\n\r\n"), None);
    }

    #[test]
    fn mails_count_by_message_id_not_by_file() {
        let mut folder = MailFolder::default();
        // The same mail under the old and the new name: one mail.
        folder.add(
            "o1.ORDER_CONFIRMED.eml",
            &mail("<o1.ORDER_CONFIRMED@choreo>"),
        );
        folder.add(
            "o1.ORDER_CONFIRMED.1111.eml",
            &mail("<o1.ORDER_CONFIRMED@choreo>"),
        );
        // A second, distinct mail: counted.
        folder.add("o1.ORDER_CONFIRMED.2222.eml", &mail("<another@choreo>"));
        // Without a Message-ID, each file is a mail.
        folder.add("o1.ORDER_CANCELLED.3333.eml", "Subject: x\r\n\r\n");
        folder.add("o1.ORDER_CANCELLED.4444.eml", "Subject: x\r\n\r\n");
        folder.add("notes.txt", &mail("<o1.ORDER_CONFIRMED@choreo>"));

        let counts = folder.counts("o1");
        assert_eq!(counts.get("ORDER_CONFIRMED"), Some(&2));
        assert_eq!(counts.get("ORDER_CANCELLED"), Some(&2));
        assert!(folder.counts("o2").is_empty());
    }

    #[test]
    fn the_folder_is_read_once_for_every_order() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("o%2E1.ORDER_CONFIRMED.aa.eml", &mail("<a@choreo>"));
        write("o%2E1.ORDER_CONFIRMED.bb.eml", &mail("<b@choreo>"));
        write("o2.ORDER_CANCELLED.cc.eml", &mail("<c@choreo>"));
        write(".o2.ORDER_CANCELLED.cc.eml.99.tmp", &mail("<d@choreo>"));

        let folder = MailFolder::read(dir.path()).unwrap();
        assert_eq!(folder.counts("o.1").get("ORDER_CONFIRMED"), Some(&2));
        assert_eq!(folder.counts("o2").get("ORDER_CANCELLED"), Some(&1));
        assert_eq!(
            MailFolder::read(&dir.path().join("missing")).unwrap(),
            MailFolder::default()
        );
    }

    #[test]
    fn a_vanished_mail_is_skipped_and_an_unreadable_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("o1.ORDER_CONFIRMED.aa.eml"),
            mail("<a@choreo>"),
        )
        .unwrap();
        // Renamed away between listing and reading: what a dangling link
        // looks like to `read`.
        std::os::unix::fs::symlink(
            dir.path().join("gone"),
            dir.path().join("o1.ORDER_CONFIRMED.bb.eml"),
        )
        .unwrap();
        let folder = MailFolder::read(dir.path()).unwrap();
        assert_eq!(folder.counts("o1").get("ORDER_CONFIRMED"), Some(&1));

        // A mail name that cannot be read is reported, not taken for none.
        std::fs::create_dir(dir.path().join("o2.ORDER_CANCELLED.cc.eml")).unwrap();
        let err = MailFolder::read(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("reading mail"), "{err:#}");

        // So is a folder that is not one.
        let file = dir.path().join("o1.ORDER_CONFIRMED.aa.eml");
        let err = MailFolder::read(&file).unwrap_err();
        assert!(
            format!("{err:#}").contains("listing mail folder"),
            "{err:#}"
        );
    }
}
