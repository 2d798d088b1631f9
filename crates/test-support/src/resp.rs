//! A minimal synchronous RESP client: one command per TCP connection, raw reply text back.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// How long [`resp_command`] waits for a reply. Long enough for `DEBUG SLEEP` of a few seconds.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// Sends one command to the Redis server on `127.0.0.1:port` and returns its reply as raw RESP
/// text, framing included.
///
/// Examples of what comes back: `"+OK\r\n"`, `"-ERR unknown command ...\r\n"`, `":1\r\n"`,
/// `"$5\r\nhello\r\n"`, `"$-1\r\n"` (nil), and for arrays the whole nested reply, e.g.
/// `"*2\r\n$1\r\na\r\n$1\r\nb\r\n"`. Error replies are returned, not raised.
///
/// Every call opens a fresh connection (so it never sees another call's state, such as a
/// `SELECT`). The reply may take up to 60 s, which covers `DEBUG SLEEP`.
///
/// # Panics
///
/// If the connection or the I/O fails (nothing listening, timeout, connection closed early).
pub fn resp_command(port: u16, args: &[&str]) -> String {
    resp_command_at(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), args)
}

/// [`resp_command`] to a server at any address.
pub(crate) fn resp_command_at(addr: SocketAddr, args: &[&str]) -> String {
    try_resp_command_at(addr, args, Duration::from_secs(5), REPLY_TIMEOUT)
        .unwrap_or_else(|err| panic!("RESP command {args:?} to {addr} failed: {err}"))
}

/// Fallible form of [`resp_command`] with explicit connect and reply timeouts.
#[cfg(test)]
pub(crate) fn try_resp_command(
    port: u16,
    args: &[&str],
    connect_timeout: Duration,
    reply_timeout: Duration,
) -> io::Result<String> {
    try_resp_command_at(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), args, connect_timeout, reply_timeout)
}

/// [`try_resp_command`] to a server at any address.
pub(crate) fn try_resp_command_at(
    addr: SocketAddr,
    args: &[&str],
    connect_timeout: Duration,
    reply_timeout: Duration,
) -> io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, connect_timeout)?;
    stream.set_read_timeout(Some(reply_timeout))?;
    stream.set_write_timeout(Some(reply_timeout))?;
    stream.set_nodelay(true)?;
    stream.write_all(&encode(args))?;
    let mut reader = BufReader::new(stream);
    let mut reply = Vec::new();
    read_reply(&mut reader, &mut reply)?;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// One connection kept open for several commands: an admin's seat that stays taken when the
/// server stops accepting clients (`maxclients`).
#[derive(Debug)]
pub struct RespConnection {
    reader: BufReader<TcpStream>,
}

impl RespConnection {
    /// Connects to the server on `127.0.0.1:port`.
    ///
    /// # Panics
    ///
    /// If the connection fails.
    pub fn open(port: u16) -> RespConnection {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to redis-server");
        stream.set_read_timeout(Some(REPLY_TIMEOUT)).expect("a read timeout");
        stream.set_nodelay(true).expect("nodelay");
        RespConnection { reader: BufReader::new(stream) }
    }

    /// Sends one command and returns its raw reply (see [`resp_command`]).
    ///
    /// # Panics
    ///
    /// If the I/O fails.
    pub fn command(&mut self, args: &[&str]) -> String {
        self.reader.get_mut().write_all(&encode(args)).expect("send a command");
        let mut reply = Vec::new();
        read_reply(&mut self.reader, &mut reply).expect("read a reply");
        String::from_utf8_lossy(&reply).into_owned()
    }
}

/// Encodes a command as a RESP array of bulk strings.
fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads one complete reply (recursing into arrays) and appends its raw bytes to `out`.
fn read_reply(reader: &mut impl BufRead, out: &mut Vec<u8>) -> io::Result<()> {
    let start = out.len();
    let n = reader.read_until(b'\n', out)?;
    if n == 0 || !out.ends_with(b"\r\n") {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-reply"));
    }
    let line = &out[start..out.len() - 2];
    let (kind, rest) = line.split_first().ok_or_else(|| invalid("empty reply line"))?;
    let kind = *kind;
    let count = || -> io::Result<i64> {
        std::str::from_utf8(rest).ok().and_then(|s| s.parse().ok()).ok_or_else(|| invalid("bad length"))
    };
    match kind {
        b'$' | b'=' | b'!' => {
            let len = count()?;
            if len >= 0 {
                let len = usize::try_from(len).map_err(|_| invalid("bad length"))?;
                let body_start = out.len();
                out.resize(body_start + len + 2, 0);
                reader.read_exact(&mut out[body_start..])?;
                if !out.ends_with(b"\r\n") {
                    return Err(invalid("bulk string not terminated by CRLF"));
                }
            }
        }
        b'*' | b'~' | b'>' | b'%' => {
            let len = count()?;
            let items = if kind == b'%' { len.saturating_mul(2) } else { len };
            for _ in 0..items.max(0) {
                read_reply(reader, out)?;
            }
        }
        // Simple string, error, integer, and the RESP3 single-line types.
        _ => {}
    }
    Ok(())
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> String {
        let mut reader = BufReader::new(raw);
        let mut out = Vec::new();
        read_reply(&mut reader, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn encodes_commands_as_bulk_string_arrays() {
        assert_eq!(encode(&["SET", "k", ""]), b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }

    #[test]
    fn reads_exactly_one_reply_of_each_kind() {
        assert_eq!(parse(b"+OK\r\n+extra\r\n"), "+OK\r\n");
        assert_eq!(parse(b"-ERR no\r\n"), "-ERR no\r\n");
        assert_eq!(parse(b":42\r\n"), ":42\r\n");
        assert_eq!(parse(b"$-1\r\n"), "$-1\r\n");
        assert_eq!(parse(b"$4\r\na\r\nb\r\n:1\r\n"), "$4\r\na\r\nb\r\n");
        assert_eq!(parse(b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n+tail\r\n"), "*2\r\n$1\r\na\r\n*1\r\n:1\r\n");
        assert_eq!(parse(b"*-1\r\n"), "*-1\r\n");
    }

    #[test]
    fn truncated_replies_are_errors() {
        let mut out = Vec::new();
        assert!(read_reply(&mut BufReader::new(&b"$5\r\nab"[..]), &mut out).is_err());
        assert!(read_reply(&mut BufReader::new(&b"+OK"[..]), &mut Vec::new()).is_err());
    }
}
