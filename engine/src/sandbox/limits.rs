//! Limits on what a stage can make strata hold: its output is read in
//! lines of at most [`MAX_LINE`] bytes, so a stage that writes gigabytes
//! without a newline costs strata 64 KiB, not gigabytes. (Its processes are
//! limited where it starts: RLIMIT_NPROC, in [`super::userns`].)

use std::io::{BufRead, BufReader, Read};

/// The longest log line kept; the rest of the line is dropped and the line
/// says how much was.
pub const MAX_LINE: usize = 64 * 1024;

/// Hands each line of `reader` (without its newline) to `each`, cut at
/// `max` bytes; a cut line ends with ` [… cut at MAX bytes]`. Returns at
/// end of file or on a read error.
///
/// The scanning is std's (`read_until`, `skip_until`: memchr, optimized
/// even in a debug build of strata): gigabytes pass through at pipe speed.
pub fn for_each_line(reader: impl Read, max: usize, mut each: impl FnMut(&[u8])) {
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let mut line: Vec<u8> = Vec::with_capacity(max.min(64 * 1024) + 64);
    loop {
        line.clear();
        let read = (&mut reader).take(max as u64).read_until(b'\n', &mut line);
        match read {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        } else if line.len() >= max {
            match reader.fill_buf() {
                // Exactly `max` bytes, then the end or the newline: whole.
                Ok([]) | Err(_) => {}
                Ok([b'\n', ..]) => reader.consume(1),
                Ok(_) => {
                    // The rest of the line is dropped as it comes.
                    let _ = reader.skip_until(b'\n');
                    line.extend_from_slice(format!(" [… cut at {max} bytes]").as_bytes());
                }
            }
        }
        each(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<String> {
        let mut out = Vec::new();
        for_each_line(input, max, |l| {
            out.push(String::from_utf8_lossy(l).into_owned())
        });
        out
    }

    #[test]
    fn lines_are_split_and_a_last_line_without_newline_counts() {
        assert_eq!(lines(b"a\nbb\n\nccc", 10), ["a", "bb", "", "ccc"]);
        assert!(lines(b"", 10).is_empty());
    }

    #[test]
    fn a_long_line_is_cut_and_says_so() {
        assert_eq!(
            lines(b"0123456789abc\nx\n", 4),
            ["0123 [… cut at 4 bytes]", "x"]
        );
        assert_eq!(lines(b"0123", 4), ["0123"]);
        assert_eq!(lines(b"0123\n4567\n", 4), ["0123", "4567"]);
    }

    #[test]
    fn a_huge_line_costs_only_the_limit() {
        // 64 MiB without a newline, read through a 64 KiB buffer.
        let huge = std::io::repeat(b'a').take(64 << 20);
        let mut seen = Vec::new();
        for_each_line(huge, MAX_LINE, |l| seen.push(l.len()));
        assert_eq!(seen.len(), 1);
        assert!(seen[0] < MAX_LINE + 40, "{}", seen[0]);
    }
}
