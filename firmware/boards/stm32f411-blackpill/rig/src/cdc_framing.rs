//! Cutting the device's outgoing byte stream into CDC-ACM bulk packets.
//!
//! A bulk transfer ends with a packet shorter than the endpoint's maximum; one that ends
//! exactly on a full packet needs a zero-length packet (ZLP) after it, or the host's driver
//! keeps waiting for more and the frame sits in its buffer. [`TxFraming`] remembers whether
//! the last packet was full and says when a ZLP is due.

/// Tracks whether the transfer under way needs a zero-length packet to end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxFraming {
    last_was_full: bool,
}

impl TxFraming {
    /// Records a data packet of `len` bytes sent on an endpoint of `max_packet` bytes.
    pub fn sent(&mut self, len: usize, max_packet: usize) {
        self.last_was_full = len >= max_packet;
    }

    /// Whether a zero-length packet must go now, with `waiting` bytes queued: the last
    /// packet was full and nothing follows it. Answers true once per such transfer.
    pub fn zlp_due(&mut self, waiting: usize) -> bool {
        let due = waiting == 0 && self.last_was_full;
        if due {
            self.last_was_full = false;
        }
        due
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    /// The packet sizes (0: ZLP) a sender makes of bursts of bytes, each burst queued after
    /// the previous one is sent, with packets of up to 64 bytes.
    fn packets(bursts: &[usize]) -> Vec<usize> {
        let mut framing = TxFraming::default();
        let mut out = Vec::new();
        for &burst in bursts {
            let mut waiting = burst;
            while waiting > 0 {
                let n = waiting.min(64);
                framing.sent(n, 64);
                waiting -= n;
                out.push(n);
            }
            if framing.zlp_due(waiting) {
                out.push(0);
            }
        }
        out
    }

    #[test]
    fn short_transfers_need_no_zlp() {
        assert_eq!(packets(&[10]), [10]);
        assert_eq!(packets(&[100]), [64, 36]);
    }

    #[test]
    fn a_transfer_ending_on_a_full_packet_gets_one_zlp() {
        assert_eq!(packets(&[64]), [64, 0]);
        assert_eq!(packets(&[128, 5]), [64, 64, 0, 5]);
        let mut framing = TxFraming::default();
        framing.sent(64, 64);
        assert!(
            !framing.zlp_due(3),
            "more bytes follow: the transfer goes on"
        );
        assert!(framing.zlp_due(0));
        assert!(!framing.zlp_due(0), "only once");
    }
}
