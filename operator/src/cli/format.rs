//! Pure text formatting shared by the client verbs: kubectl-style ages, aligned
//! tables, and the one-line rendering of an API server admission rejection.

use std::time::Duration;

use jiff::Timestamp;
use kube::core::Status;

/// Placeholder for an unset value, as kubectl prints it.
pub const NONE: &str = "<none>";

/// A duration the way kubectl prints ages: `45s`, `3m20s`, `15m`, `2h30m`, `20h`,
/// `4d3h`, `30d`, `2y10d` (kubectl's `HumanDuration` rules, so columns read the same).
pub fn human_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds < 2 * 60 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let rest = seconds % 60;
        return if rest == 0 { format!("{minutes}m") } else { format!("{minutes}m{rest}s") };
    }
    if minutes < 3 * 60 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let rest = minutes % 60;
        return if rest == 0 { format!("{hours}h") } else { format!("{hours}h{rest}m") };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        let rest = hours % 24;
        return if rest == 0 { format!("{days}d") } else { format!("{days}d{rest}h") };
    }
    if days < 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if days < 365 * 8 {
        let rest = days % 365;
        return if rest == 0 { format!("{years}y") } else { format!("{years}y{rest}d") };
    }
    format!("{years}y")
}

/// Age of something that happened at `then`, seen at `now`; a timestamp slightly in
/// the future (clock skew between client and API server) reads as `0s`.
pub fn age(then: Timestamp, now: Timestamp) -> String {
    let elapsed = now.duration_since(then);
    human_duration(elapsed.try_into().unwrap_or(Duration::ZERO))
}

/// Renders rows under a header, columns left-aligned and three spaces apart like
/// kubectl; the last column is not padded, so lines carry no trailing spaces.
pub fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|title| title.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header_row: Vec<String> = header.iter().map(|title| title.to_string()).collect();
    let mut table = String::new();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (index, cell) in row.iter().take(columns).enumerate() {
            if index + 1 == columns {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(widths[index] - cell.chars().count() + 3));
            }
        }
        table.push_str(line.trim_end());
        table.push('\n');
    }
    table
}

/// An admission rejection as one line: `spec.etcd.replicas: must be 1, 3 or 5: ...`,
/// one `field: reason` per cause joined with "; ". The API server's wording repeats the
/// object ("TenantCluster.nestor.dev \"x\" is invalid"), the offending value's type
/// (`Invalid value: "integer"`) and the field name; those are dropped.
pub fn admission_message(status: &Status) -> String {
    let causes: Vec<String> = status
        .details
        .iter()
        .flat_map(|details| &details.causes)
        .map(|cause| {
            let reason = strip_invalid_value(&cause.message);
            if cause.field.is_empty() {
                flatten(reason)
            } else {
                let reason = strip_field_prefix(reason, &cause.field);
                format!("{}: {}", cause.field, flatten(reason))
            }
        })
        .collect();
    if !causes.is_empty() {
        let mut unique: Vec<String> = Vec::new();
        for cause in causes {
            if !unique.contains(&cause) {
                unique.push(cause);
            }
        }
        return unique.join("; ");
    }
    let message = flatten(&status.message);
    match message.split_once(" is invalid: ") {
        Some((_, rest)) => rest.to_string(),
        None => message,
    }
}

/// Drops the `Invalid value: <value>: ` prefix the API server puts before a reason.
fn strip_invalid_value(message: &str) -> &str {
    let Some(rest) = message.strip_prefix("Invalid value: ") else { return message };
    let after_value = if let Some(quoted) = rest.strip_prefix('"') {
        // A Go-quoted value: skip to its closing quote, minding escapes.
        let mut escaped = false;
        let mut end = None;
        for (index, character) in quoted.char_indices() {
            match character {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    end = Some(index + 1);
                    break;
                }
                _ => {}
            }
        }
        match end {
            Some(end) => &quoted[end..],
            None => return message,
        }
    } else {
        match rest.find(": ") {
            Some(end) => &rest[end..],
            None => return message,
        }
    };
    after_value.strip_prefix(": ").unwrap_or(message)
}

/// Drops a leading repetition of the field name (`spec.x must ...`, `spec.x in body should ...`).
fn strip_field_prefix<'a>(reason: &'a str, field: &str) -> &'a str {
    reason
        .strip_prefix(field)
        .map(|rest| rest.strip_prefix(" in body").unwrap_or(rest))
        .and_then(|rest| rest.strip_prefix(' '))
        .unwrap_or(reason)
}

fn flatten(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use kube::core::response::{StatusCause, StatusDetails};

    use super::*;

    #[test]
    fn durations_read_like_kubectl_ages() {
        let cases = [
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (9 * 60 + 59, "9m59s"),
            (15 * 60 + 10, "15m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (2 * 3600 + 30 * 60, "150m"),
            (5 * 3600 + 30 * 60, "5h30m"),
            (20 * 3600 + 59 * 60, "20h"),
            (47 * 3600, "47h"),
            (4 * 86400, "4d"),
            (4 * 86400 + 3 * 3600, "4d3h"),
            (30 * 86400, "30d"),
            (729 * 86400, "729d"),
            (730 * 86400, "2y"),
            (740 * 86400, "2y10d"),
            (3650 * 86400, "10y"),
        ];
        for (seconds, expected) in cases {
            assert_eq!(human_duration(Duration::from_secs(seconds)), expected, "{seconds}s");
        }
    }

    #[test]
    fn age_in_the_future_is_zero() {
        let now: Timestamp = "2025-06-01T12:00:00Z".parse().unwrap();
        let later: Timestamp = "2025-06-01T12:00:05Z".parse().unwrap();
        assert_eq!(age(later, now), "0s");
        assert_eq!(age(now, later), "5s");
    }

    #[test]
    fn tables_align_columns_without_trailing_spaces() {
        let table = render_table(
            &["NAME", "PHASE", "AGE"],
            &[
                vec!["team-a".into(), "Ready".into(), "5s".into()],
                vec!["b".into(), "Provisioning".into(), "".into()],
            ],
        );
        assert_eq!(
            table,
            "NAME     PHASE          AGE\n\
             team-a   Ready          5s\n\
             b        Provisioning\n"
        );
    }

    fn invalid(message: &str, causes: &[(&str, &str)]) -> Status {
        Status::failure(message, "Invalid").with_code(422).with_details(StatusDetails {
            name: "x".into(),
            group: "nestor.dev".into(),
            kind: "TenantCluster".into(),
            causes: causes
                .iter()
                .map(|(field, message)| StatusCause {
                    reason: "FieldValueInvalid".into(),
                    message: message.to_string(),
                    field: field.to_string(),
                })
                .collect(),
            uid: String::new(),
            retry_after_seconds: 0,
        })
    }

    #[test]
    fn admission_causes_become_one_field_and_reason_each() {
        let status = invalid(
            "TenantCluster.nestor.dev \"x\" is invalid: spec.etcd.replicas: Invalid value: \"integer\": \
             spec.etcd.replicas must be 1, 3 or 5: an odd member count keeps a quorum",
            &[(
                "spec.etcd.replicas",
                "Invalid value: \"integer\": spec.etcd.replicas must be 1, 3 or 5: an odd member count keeps a quorum",
            )],
        );
        assert_eq!(
            admission_message(&status),
            "spec.etcd.replicas: must be 1, 3 or 5: an odd member count keeps a quorum"
        );

        let status = invalid(
            "ignored",
            &[
                (
                    "spec.etcd.replicas",
                    "Invalid value: 7: spec.etcd.replicas in body should be less than or equal to 5",
                ),
                ("spec.version", "Invalid value: \"str\\\"ing: x\": spec.version must be supported"),
                ("spec.version", "Invalid value: \"str\\\"ing: x\": spec.version must be supported"),
                ("spec.network.serviceType", "Unsupported value: \"Foo\": supported values: \"ClusterIP\""),
            ],
        );
        assert_eq!(
            admission_message(&status),
            "spec.etcd.replicas: should be less than or equal to 5; spec.version: must be supported; \
             spec.network.serviceType: Unsupported value: \"Foo\": supported values: \"ClusterIP\""
        );
    }

    #[test]
    fn admission_message_without_causes_drops_the_object_prefix() {
        let status = Status::failure(
            "TenantCluster.nestor.dev \"x\" is invalid: spec.version: Invalid value:\n \"1.36.0\"",
            "Invalid",
        )
        .with_code(422);
        assert_eq!(admission_message(&status), "spec.version: Invalid value: \"1.36.0\"");
    }
}
