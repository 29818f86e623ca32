//! RFC 5424 messages for log lines, and the octet-counted framing (RFC 6587 3.4.1) that both
//! syslog drains and Logplex frames use.

use bus_schema::messages::{LogLine, Stream};

/// Facility `user` (1), as Logplex uses for app lines.
const FACILITY_USER: u8 = 1;
/// Severity `informational`, for stdout.
const SEVERITY_INFO: u8 = 6;
/// Severity `error`, for stderr.
const SEVERITY_ERROR: u8 = 3;

/// Field lengths RFC 5424 section 6 allows.
const HOSTNAME_MAX: usize = 255;
const APP_NAME_MAX: usize = 48;
const PROCID_MAX: usize = 128;

/// One RFC 5424 message for a line, without framing
/// (`<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG`).
pub fn rfc5424(line: &LogLine, hostname: &str) -> Vec<u8> {
    let severity = match line.stream {
        Stream::Stdout => SEVERITY_INFO,
        Stream::Stderr => SEVERITY_ERROR,
    };
    let pri = FACILITY_USER * 8 + severity;
    let message = line.message.trim_end_matches(['\n', '\r']);
    let mut out = Vec::with_capacity(80 + message.len());
    out.extend_from_slice(
        format!(
            "<{pri}>1 {} {} {} {} - - ",
            line.time.to_rfc3339(),
            header_field(hostname, HOSTNAME_MAX),
            header_field(line.app.as_str(), APP_NAME_MAX),
            header_field(&line.source.to_string(), PROCID_MAX),
        )
        .as_bytes(),
    );
    out.extend_from_slice(message.as_bytes());
    out
}

/// A header field as RFC 5424 wants it: PRINTUSASCII only (no spaces), at most `max` octets,
/// `-` when nothing is left. Anything else becomes `_`, so a field never shifts the ones after it.
fn header_field(value: &str, max: usize) -> String {
    let clean: String = value.chars().map(|c| if c.is_ascii_graphic() { c } else { '_' }).take(max).collect();
    if clean.is_empty() { "-".to_owned() } else { clean }
}

/// Appends one message with octet-counted framing: `<len> <message>`.
pub(crate) fn frame_into(out: &mut Vec<u8>, message: &[u8]) {
    out.extend_from_slice(message.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(message);
}

#[cfg(test)]
mod tests {
    use bus_schema::envelope::Timestamp;
    use bus_schema::messages::LogSource;
    use bus_schema::names::{AppName, ProcessType};

    use super::*;

    fn line(stream: Stream, message: &str) -> LogLine {
        LogLine {
            app: AppName::parse("myapp").unwrap(),
            // 2026-11-27T10:00:00.123456789Z
            time: Timestamp(1_795_773_600_123_456_789),
            source: LogSource::App { process_type: ProcessType::parse("web").unwrap(), index: 1 },
            stream,
            node: None,
            seq: 7,
            message: message.to_owned(),
        }
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn stdout_is_user_info_and_stderr_user_error() {
        let out = text(rfc5424(&line(Stream::Stdout, "listening on 5000"), "deis"));
        assert_eq!(out, "<14>1 2026-11-27T10:00:00.123456Z deis myapp web.1 - - listening on 5000");
        let err = text(rfc5424(&line(Stream::Stderr, "boom"), "deis"));
        assert!(err.starts_with("<11>1 "), "{err}");
        let mut router = line(Stream::Stdout, "GET /");
        router.source = LogSource::Router;
        assert!(text(rfc5424(&router, "deis")).contains(" myapp deis-router - - GET /"));
    }

    #[test]
    fn header_fields_are_sanitised_and_bounded() {
        let out = text(rfc5424(&line(Stream::Stdout, "m"), "my host\té"));
        assert!(out.contains(" my_host__ myapp "), "{out}");
        let out = text(rfc5424(&line(Stream::Stdout, "m"), ""));
        assert!(out.contains("Z - myapp web.1 - - m"), "{out}");
        let long = "h".repeat(300);
        let out = text(rfc5424(&line(Stream::Stdout, "m"), &long));
        assert!(out.contains(&format!(" {} myapp", "h".repeat(HOSTNAME_MAX))), "{out}");
        assert!(!out.contains(&"h".repeat(HOSTNAME_MAX + 1)));
        let mut long_app = line(Stream::Stdout, "m");
        long_app.app = AppName::parse(format!("a{}", "b".repeat(62))).unwrap();
        let out = text(rfc5424(&long_app, "deis"));
        let app_field = out.split(' ').nth(3).unwrap();
        assert_eq!(app_field.len(), APP_NAME_MAX);
    }

    #[test]
    fn the_message_keeps_its_text_but_not_a_trailing_newline() {
        let out = text(rfc5424(&line(Stream::Stdout, "  indented — ünïcode\r\n"), "deis"));
        assert!(out.ends_with(" - -   indented — ünïcode"), "{out:?}");
        let empty = text(rfc5424(&line(Stream::Stdout, ""), "deis"));
        assert!(empty.ends_with(" web.1 - - "), "{empty:?}");
    }

    #[test]
    fn framing_counts_octets_not_characters() {
        let mut out = Vec::new();
        frame_into(&mut out, "héllo".as_bytes());
        frame_into(&mut out, b"x");
        assert_eq!(out, "6 héllo1 x".as_bytes());
    }
}
