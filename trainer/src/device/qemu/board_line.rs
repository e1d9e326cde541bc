//! What a board image says over semihosting (QEMU's stderr): each of its lines starts with
//! `tether board: ` (the board's `serve.rs` and `fault.rs`); everything else on QEMU's
//! output is QEMU's own.

/// How every line a board prints starts.
pub const BOARD_PREFIX: &str = "tether board: ";

/// One line a board printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BoardLine {
    /// `serving free-running` or `serving in real time`: the board is up and reads its UART.
    Serving,
    /// `<n> bad frames from the host`: the count of host frames it refused so far, printed
    /// whenever it grows.
    BadFrames(u32),
    /// Anything else: a fatal message (a panic, a fault, a bad command line); the board
    /// stops right after it with a failure status.
    Fatal(String),
}

impl BoardLine {
    /// The board's line in `line`; `None` for QEMU's own lines.
    pub fn parse(line: &str) -> Option<BoardLine> {
        let said = line.strip_prefix(BOARD_PREFIX)?;
        if said.starts_with("serving ") {
            return Some(BoardLine::Serving);
        }
        let count = said
            .strip_suffix(" bad frames from the host")
            .and_then(|n| n.parse().ok());
        Some(match count {
            Some(n) => BoardLine::BadFrames(n),
            None => BoardLine::Fatal(said.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn board_lines_are_told_apart_from_qemus() {
        let parse = BoardLine::parse;
        assert_eq!(
            parse("tether board: serving free-running"),
            Some(BoardLine::Serving)
        );
        assert_eq!(
            parse("tether board: serving in real time"),
            Some(BoardLine::Serving)
        );
        assert_eq!(
            parse("tether board: 3116 bad frames from the host"),
            Some(BoardLine::BadFrames(3116))
        );
        assert_eq!(
            parse("tether board: panicked: at src/x.rs:1:1"),
            Some(BoardLine::Fatal("panicked: at src/x.rs:1:1".into()))
        );
        assert_eq!(
            parse("tether board: many bad frames from the host"),
            Some(BoardLine::Fatal("many bad frames from the host".into()))
        );
        assert_eq!(parse("qemu-system-arm: terminating on signal 2"), None);
        assert_eq!(
            parse("char device redirected to /dev/pts/7 (label serial0)"),
            None
        );
    }
}
