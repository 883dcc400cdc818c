//! Property tests of [`classify`], [`classify_error`] and
//! [`classify_line`]: no panic on any reply, error line or transport error;
//! `MOVED`/`ASK` only with a slot below 16384 and a `host:port` address; the
//! module's mapping (first error reply decides; codes to actions) holds for
//! every input.

use proptest::prelude::*;
use redis::Value;

use super::*;
use crate::prop_values::{self, config};

/// What the module docs say `MOVED`/`ASK` details must be: exactly two
/// words, a slot below 16384 and an address whose text after its last `:`
/// is a port.
fn reference_redirect(detail: &str) -> Option<(u16, String)> {
    let words: Vec<&str> = detail.split_ascii_whitespace().collect();
    let [slot, addr] = words[..] else {
        return None;
    };
    let slot: u16 = slot.parse().ok().filter(|&s| s < crate::slot::SLOT_COUNT)?;
    let port = &addr[addr.rfind(':')? + 1..];
    port.parse::<u16>().ok()?;
    Some((slot, addr.to_owned()))
}

/// The action the module docs give for error `code` with `detail`.
fn reference_action(code: &str, detail: &str) -> Option<Action> {
    Some(match code {
        "MOVED" | "ASK" => match reference_redirect(detail) {
            Some((slot, addr)) if code == "MOVED" => Action::Moved { slot, addr },
            Some((slot, addr)) => Action::Ask { slot, addr },
            None => return Some(Action::Fail(FailCause::Protocol(String::new()))),
        },
        "TRYAGAIN" => Action::TryAgain,
        "CLUSTERDOWN" => Action::Refresh(RetryCause::ClusterDown),
        "LOADING" => Action::Refresh(RetryCause::Loading),
        "MASTERDOWN" => Action::Refresh(RetryCause::MasterDown),
        "READONLY" => Action::Refresh(RetryCause::ReadOnly),
        "NOSCRIPT" => Action::NoScript,
        "WRONGPASS" | "NOAUTH" => Action::Fail(FailCause::Auth(format!("{code} {detail}"))),
        "BUSY" => Action::Refresh(RetryCause::Busy),
        "NOREPLICAS" => Action::Refresh(RetryCause::NoReplicas),
        _ => Action::Fail(FailCause::Server {
            code: code.to_owned(),
            message: detail.to_owned(),
        }),
    })
}

/// `got` is what the reference says; protocol failures compare by kind
/// only (their message is free text).
fn check_mapping(code: &str, detail: &str, got: &Action) -> Result<(), TestCaseError> {
    if let Action::Moved { slot, addr } | Action::Ask { slot, addr } = got {
        prop_assert!(*slot < crate::slot::SLOT_COUNT, "{got:?}");
        let redirect = format!("{slot} {addr}");
        prop_assert!(reference_redirect(&redirect).is_some(), "{got:?}");
    }
    match reference_action(code, detail) {
        Some(Action::Fail(FailCause::Protocol(_))) => {
            prop_assert!(
                matches!(got, Action::Fail(FailCause::Protocol(_))),
                "{code} {detail:?} gave {got:?}"
            );
        }
        Some(want) => prop_assert_eq!(got, &want, "{} {:?}", code, detail),
        None => prop_assert!(
            !matches!(
                got,
                Action::Done | Action::Moved { .. } | Action::Ask { .. }
            ),
            "{code} {detail:?} gave {got:?}"
        ),
    }
    Ok(())
}

/// A redirect detail: a slot-like number (any integer, or not a number)
/// and an address-like word (with or without a port), with odd spacing and
/// extra words now and then.
fn redirect_detail() -> impl Strategy<Value = String> {
    let slot = prop_oneof![
        4 => (0u32..20_000).prop_map(|n| n.to_string()),
        2 => (16_380u32..16_390).prop_map(|n| n.to_string()),
        1 => (65_530u32..65_540).prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => "[+0-9a-z-]{0,6}",
    ];
    let host = prop_oneof![
        Just(String::new()),
        Just("127.0.0.1".to_owned()),
        Just("::1".to_owned()),
        "[a-z0-9.-]{1,12}",
    ];
    let port = prop_oneof![
        4 => (0u32..70_000).prop_map(|n| n.to_string()),
        1 => "[0-9a-z+-]{0,6}",
    ];
    let addr = prop_oneof![
        5 => (host.clone(), port).prop_map(|(h, p)| format!("{h}:{p}")),
        1 => host,
    ];
    let gap = proptest::sample::select(vec![" ", "  ", "\t", " \t "]);
    let extra = proptest::option::of("[a-z0-9]{1,4}");
    (slot, gap.clone(), addr, gap, extra).prop_map(|(s, g1, a, g2, extra)| match extra {
        Some(x) => format!("{s}{g1}{a}{g2}{x}"),
        None => format!("{s}{g1}{a}"),
    })
}

/// An error code: one the router knows, or an arbitrary word.
fn code() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(vec![
            "MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN", "LOADING", "MASTERDOWN", "READONLY",
            "NOSCRIPT", "WRONGPASS", "NOAUTH", "BUSY", "NOREPLICAS", "ERR", "WRONGTYPE",
        ])
        .prop_map(str::to_owned),
        1 => "[A-Za-z]{0,10}",
        1 => any::<String>().prop_map(|s| s.chars().take(8).collect()),
    ]
}

/// A transport or client-side error of any kind redis-rs makes.
fn transport_error() -> impl Strategy<Value = RedisError> {
    use std::io::ErrorKind as Io;
    let io_kind = proptest::sample::select(vec![
        Io::ConnectionRefused,
        Io::ConnectionReset,
        Io::ConnectionAborted,
        Io::BrokenPipe,
        Io::UnexpectedEof,
        Io::TimedOut,
        Io::NotConnected,
        Io::WouldBlock,
        Io::InvalidData,
        Io::Other,
    ]);
    let kind = proptest::sample::select(vec![
        redis::ErrorKind::Parse,
        redis::ErrorKind::AuthenticationFailed,
        redis::ErrorKind::UnexpectedReturnType,
        redis::ErrorKind::InvalidClientConfig,
        redis::ErrorKind::Io,
        redis::ErrorKind::Client,
        redis::ErrorKind::Extension,
        redis::ErrorKind::ClusterConnectionNotFound,
        redis::ErrorKind::RESP3NotSupported,
    ]);
    prop_oneof![
        io_kind.prop_map(|k| RedisError::from(std::io::Error::new(k, "test"))),
        (kind, "[ -~]{0,16}").prop_map(|(k, d)| RedisError::from((k, "test", d))),
        prop_values::server_error().prop_map(|v| match v {
            Value::ServerError(e) => RedisError::from(e),
            _ => RedisError::from((redis::ErrorKind::Client, "not a server error")),
        }),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Any error line: no panic, and the documented mapping holds.
    #[test]
    fn error_lines_map_as_documented(
        code in code(),
        detail in prop_oneof![redirect_detail(), "[ -~]{0,20}"],
        dash in any::<bool>(),
        crlf in any::<bool>(),
    ) {
        prop_assume!(!code.contains(' ') && !code.is_empty());
        let got = classify_error(&code, &detail);
        check_mapping(&code, &detail, &got)?;
        // The same through a raw line, when it splits back into the same
        // code and detail.
        let line = format!(
            "{}{code} {detail}{}",
            if dash { "-" } else { "" },
            if crlf { "\r\n" } else { "" }
        );
        if !detail.ends_with(['\r', '\n']) && !code.starts_with('-') {
            prop_assert_eq!(classify_line(&line), got);
        }
    }

    /// `MOVED`/`ASK` lines with arbitrary slot numbers and addresses are
    /// redirects exactly when the slot is below 16384 and the address ends
    /// in a port; otherwise protocol failures, never a redirect elsewhere.
    #[test]
    fn redirects_need_a_slot_and_an_address(ask in any::<bool>(), detail in redirect_detail()) {
        let code = if ask { "ASK" } else { "MOVED" };
        let got = classify_line(&format!("-{code} {detail}\r\n"));
        check_mapping(code, &detail, &got)?;
    }

    /// Arbitrary lines (any text) never panic, and any redirect they give
    /// is well formed.
    #[test]
    fn any_line_is_classified(line in any::<String>()) {
        if let Action::Moved { slot, addr } | Action::Ask { slot, addr } = classify_line(&line) {
            let redirect = format!("{slot} {addr}");
            prop_assert!(slot < crate::slot::SLOT_COUNT);
            prop_assert!(reference_redirect(&redirect).is_some(), "{}", redirect);
        }
    }

    /// A pipeline's replies: `Done` when no reply is an error, otherwise
    /// what its first error reply alone gives.
    #[test]
    fn the_first_error_reply_decides(
        replies in proptest::collection::vec(
            prop_oneof![3 => prop_values::value(), 1 => prop_values::server_error()],
            0..6,
        ),
    ) {
        let got = classify(&Ok(replies.clone()));
        match replies.iter().find(|r| matches!(r, Value::ServerError(_))) {
            None => prop_assert_eq!(got, Action::Done),
            Some(first) => {
                prop_assert_eq!(got.clone(), classify(&Ok(vec![first.clone()])));
                let Value::ServerError(e) = first else { unreachable!() };
                let code = e.code();
                if !code.is_empty() && !code.contains(char::is_whitespace) {
                    check_mapping(code, e.details().unwrap_or_default(), &got)?;
                }
            }
        }
    }

    /// Transport errors never panic and are never `Done`; I/O failures ask
    /// for a refresh; server errors surfaced as `Err` classify like
    /// replies.
    #[test]
    fn transport_errors_are_classified(err in transport_error()) {
        let got = classify(&Err(err.clone()));
        prop_assert!(got != Action::Done);
        if err.code().is_none() && (err.is_io_error() || err.is_timeout()) {
            prop_assert!(matches!(got, Action::Refresh(_)), "{err:?} gave {got:?}");
        }
        if let Some(code) = err.code() {
            prop_assert_eq!(got, classify_error(code, err.detail().unwrap_or_default()));
        }
    }
}
