//! Wire protocol and policy layout shared by the tether firmware and trainer.
#![no_std]
