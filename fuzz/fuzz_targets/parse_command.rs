//! `parse_command` on arbitrary bytes: it must not panic, and a command it
//! accepts must display as a line that parses back to the same command.

#![no_main]

use libfuzzer_sys::fuzz_target;
use smtp_wire::command::parse_command;

fuzz_target!(|line: &[u8]| {
    let Ok(command) = parse_command(line) else {
        return;
    };
    let again = parse_command(command.to_string().as_bytes());
    assert_eq!(again, Ok(command), "round trip of {line:?}");
});
