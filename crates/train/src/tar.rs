//! Just enough of the tar format to take text files out of a Python source distribution (a
//! `.tar.gz` written by setuptools): ustar headers with the name prefix, GNU long names (`L`) and
//! pax `path` records. The archive is always checked against its pinned SHA-256 before it gets
//! here, so this reads one known file; it still refuses what it does not understand rather than
//! guessing, and bounds what it keeps.

use std::io::{self, Read};

const BLOCK: usize = 512;
/// No member kept or name record read may be larger than this (the plays are 100–300 KB each).
const MAX_MEMBER: u64 = 16 << 20;

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn c_str(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

fn octal(field: &[u8]) -> io::Result<u64> {
    if field[0] & 0x80 != 0 {
        return Err(bad("tar: base-256 sizes (members over 8 GiB) are not supported"));
    }
    let s = c_str(field);
    let s = s.trim_matches(|c: char| c == ' ' || c == '\0');
    if s.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(s, 8).map_err(|_| bad(format!("tar: bad octal number {s:?}")))
}

fn read_data(reader: &mut impl Read, size: u64) -> io::Result<Vec<u8>> {
    if size > MAX_MEMBER {
        return Err(bad(format!("tar: member of {size} bytes, more than the {MAX_MEMBER} kept")));
    }
    let mut data = vec![0u8; size as usize];
    reader.read_exact(&mut data)?;
    skip(reader, padding(size))?;
    Ok(data)
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

fn skip(reader: &mut impl Read, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut reader.take(n), &mut io::sink())?;
    if copied != n {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "tar: archive ends inside a member"));
    }
    Ok(())
}

/// The regular files of the archive whose path `want` accepts, as (path, bytes), in archive order.
pub fn extract(mut reader: impl Read, mut want: impl FnMut(&str) -> bool) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut long_name: Option<String> = None;
    let mut header = [0u8; BLOCK];
    loop {
        match reader.read_exact(&mut header) {
            Ok(()) => {}
            // Some writers omit the two zero blocks at the end.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(out),
            Err(e) => return Err(e),
        }
        if header.iter().all(|&b| b == 0) {
            return Ok(out);
        }
        let computed: u64 =
            header.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { b' ' as u64 } else { b as u64 }).sum();
        if octal(&header[148..156])? != computed {
            return Err(bad("tar: header checksum mismatch"));
        }
        let size = octal(&header[124..136])?;
        let mut name = c_str(&header[0..100]);
        if &header[257..262] == b"ustar" {
            let prefix = c_str(&header[345..500]);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        if let Some(long) = long_name.take() {
            name = long;
        }
        match header[156] {
            b'L' => {
                long_name = Some(c_str(&read_data(&mut reader, size)?));
            }
            b'x' => {
                let records = read_data(&mut reader, size)?;
                long_name = pax_path(&records)?;
            }
            b'0' | 0 if want(&name) => out.push((name, read_data(&mut reader, size)?)),
            _ => skip(&mut reader, size + padding(size))?,
        }
    }
}

/// The `path` of a pax extended header (`"<len> path=<value>\n"` records), if it has one.
fn pax_path(mut records: &[u8]) -> io::Result<Option<String>> {
    let mut path = None;
    while !records.is_empty() {
        let space = records.iter().position(|&b| b == b' ').ok_or_else(|| bad("tar: bad pax record"))?;
        let len: usize = std::str::from_utf8(&records[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|&l| l > space + 1 && l <= records.len())
            .ok_or_else(|| bad("tar: bad pax record length"))?;
        let record = &records[space + 1..len - 1];
        if let Some(value) = record.strip_prefix(b"path=") {
            path = Some(String::from_utf8_lossy(value).into_owned());
        }
        records = &records[len..];
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ustar header as Python's `tarfile` (USTAR_FORMAT) writes one, checksum included.
    fn header(name: &str, size: usize, kind: u8, prefix: &str) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    fn member(out: &mut Vec<u8>, name: &str, data: &[u8], kind: u8, prefix: &str) {
        out.extend_from_slice(&header(name, data.len(), kind, prefix));
        out.extend_from_slice(data);
        out.resize(out.len() + padding(data.len() as u64) as usize, 0);
    }

    #[test]
    fn takes_wanted_files_by_full_path() {
        let mut tar = Vec::new();
        member(&mut tar, "pkg/", b"", b'5', "");
        member(&mut tar, "a.txt", b"hello", b'0', "pkg/texts");
        member(&mut tar, "pkg/skip.bin", &[7u8; 700], b'0', "");
        let long = format!("pkg/{}.txt", "x".repeat(120));
        member(&mut tar, "././@LongLink", format!("{long}\0").as_bytes(), b'L', "");
        member(&mut tar, "truncated-name", b"long body", b'0', "");
        let pax_name = "pkg/pax-named.txt";
        let rec_len = format!(" path={pax_name}\n").len();
        let rec = format!("{} path={pax_name}\n", rec_len + (rec_len + 2).to_string().len());
        member(&mut tar, "PaxHeader", rec.as_bytes(), b'x', "");
        member(&mut tar, "pax-short", b"pax body", b'0', "");
        tar.extend_from_slice(&[0u8; 2 * BLOCK]);
        let got = extract(&tar[..], |n| n.ends_with(".txt")).unwrap();
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["pkg/texts/a.txt", long.as_str(), pax_name]);
        assert_eq!(got[0].1, b"hello");
        assert_eq!(got[1].1, b"long body");
        assert_eq!(got[2].1, b"pax body");
    }

    #[test]
    fn a_corrupt_header_or_a_cut_archive_is_an_error() {
        let mut tar = Vec::new();
        member(&mut tar, "a.txt", b"hello", b'0', "");
        let mut corrupt = tar.clone();
        corrupt[0] = b'b';
        assert!(extract(&corrupt[..], |_| true).unwrap_err().to_string().contains("checksum"));
        let cut = &tar[..BLOCK + 3];
        assert!(extract(cut, |_| true).is_err());
    }
}
