//! tether firmware: the device runtime that runs the policy at the plant's control rate.
#![cfg_attr(not(feature = "sim"), no_std)]

pub mod plant;
