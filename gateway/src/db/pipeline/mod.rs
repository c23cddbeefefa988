//! A lean Postgres connection for the REST hot path.
//!
//! tokio-postgres ends every statement with a Sync, so a request's role / claims
//! set-up and its statement need an explicit BEGIN and COMMIT: four executions and four
//! ReadyForQuery turns in Postgres per request. Here a request is one *pipeline*:
//! `Bind/Execute` for each step and a single `Sync` — the steps share Postgres's
//! implicit transaction (committed at the Sync, rolled back by any error), so the
//! transaction-local `set_config` of the first step holds for the next. The request
//! task owns the socket while it runs: one write and (usually) one read per request,
//! no connection task in between.
//!
//! Statements are parsed once per connection (named `s<n>`, parameters all text) and
//! reused. Messages are encoded and decoded by postgres-protocol (the crate under
//! tokio-postgres), which also does SCRAM-SHA-256. Connections follow the same
//! `DATABASE_URL` as the main pool (TCP or a Unix socket, no TLS: as the main pool).

use std::collections::HashMap;
use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::{backend, frontend};
use postgres_protocol::IsNull;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::config::Host;

/// What holding one result row costs beyond its bytes (its vectors and strings),
/// counted against the response limit: many small rows are not free.
pub const ROW_COST: usize = 64;

/// Prepared statements kept per connection before they are all closed.
const MAX_STATEMENTS: usize = 1000;

/// A connection's prepared statements: text → name. Every request looks its
/// statements up by their text, so the hash is foldhash (seeded per process; SipHash
/// was 2% of a read's CPU); the map holds at most [`MAX_STATEMENTS`].
pub(super) type Statements = HashMap<String, String, foldhash::fast::RandomState>;

/// A failure of a pipeline.
#[derive(Debug)]
pub enum WireError {
    /// Postgres answered with an error; the connection is fine.
    Db(DbFields),
    /// The connection failed (it is discarded).
    Io(std::io::Error),
    /// A result message larger than the connection's limit (bytes): the statement is
    /// cancelled and the connection closed before the message is buffered.
    TooLarge(usize),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Db(d) => write!(f, "{}: {}", d.code, d.message),
            WireError::Io(e) => write!(f, "database connection: {e}"),
            WireError::TooLarge(n) => write!(f, "a result message is larger than {n} bytes"),
        }
    }
}

impl std::error::Error for WireError {}

impl From<std::io::Error> for WireError {
    fn from(e: std::io::Error) -> Self {
        match e.get_ref().and_then(|inner| inner.downcast_ref::<Oversized>()) {
            Some(o) => WireError::TooLarge(o.0),
            None => WireError::Io(e),
        }
    }
}

/// The io::Error payload of a message over the size limit.
#[derive(Debug)]
struct Oversized(usize);

impl std::fmt::Display for Oversized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "message larger than {} bytes", self.0)
    }
}

impl std::error::Error for Oversized {}

/// The fields of an ErrorResponse that callers map to HTTP.
#[derive(Debug, Default, Clone)]
pub struct DbFields {
    /// SQLSTATE.
    pub code: String,
    /// Primary message.
    pub message: String,
    /// DETAIL.
    pub detail: Option<String>,
    /// HINT.
    pub hint: Option<String>,
}

impl DbFields {
    fn parse(body: &backend::ErrorResponseBody) -> std::io::Result<DbFields> {
        let mut out = DbFields::default();
        let mut fields = body.fields();
        while let Some(f) = fields.next()? {
            let v = String::from_utf8_lossy(f.value_bytes()).into_owned();
            match f.type_() {
                b'C' => out.code = v,
                b'M' => out.message = v,
                b'D' => out.detail = Some(v),
                b'H' => out.hint = Some(v),
                _ => {}
            }
        }
        Ok(out)
    }
}

/// One statement of a pipeline: its text and its text parameters (None = NULL).
pub struct Step<'a> {
    /// SQL text (parsed once per connection).
    pub sql: &'a str,
    /// Parameters, sent in text format.
    pub params: Vec<Option<&'a str>>,
    /// Declare every parameter `text` (a statement that need not use them all, e.g.
    /// an EXPLAIN over another statement's parameters); otherwise Postgres infers
    /// their types.
    pub text_params: bool,
}

/// What one step returned: its rows (text columns) and its command tag's count.
#[derive(Debug, Default)]
pub struct StepResult {
    /// Rows, each a list of text values.
    pub rows: Vec<Vec<Option<String>>>,
    /// Rows affected / returned, from the command tag.
    pub affected: u64,
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Stream {
    async fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.write_all(buf).await,
            Stream::Unix(s) => s.write_all(buf).await,
        }
    }
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf).await,
            Stream::Unix(s) => s.read(buf).await,
        }
    }
    async fn read_buf(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read_buf(buf).await,
            Stream::Unix(s) => s.read_buf(buf).await,
        }
    }
    async fn ready(&self, interest: tokio::io::Interest) -> std::io::Result<tokio::io::Ready> {
        match self {
            Stream::Tcp(s) => s.ready(interest).await,
            Stream::Unix(s) => s.ready(interest).await,
        }
    }
    fn try_write(&self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.try_write(buf),
            Stream::Unix(s) => s.try_write(buf),
        }
    }
    fn try_read_buf(&self, buf: &mut BytesMut) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.try_read_buf(buf),
            Stream::Unix(s) => s.try_read_buf(buf),
        }
    }
}

/// Where and how to cancel what a connection's backend is running.
#[derive(Debug, Clone)]
struct CancelKey {
    host: Host,
    port: u16,
    pid: i32,
    secret: i32,
}

/// One connection.
pub struct WireConn {
    stream: Stream,
    read: BytesMut,
    write: BytesMut,
    statements: Statements,
    next_statement: u64,
    /// A pipeline was interrupted (its future dropped) or I/O failed: not reusable
    /// until [`WireConn::recover`] has cancelled and drained it.
    broken: bool,
    /// The interruption came while a request was being written: the protocol stream
    /// cannot be resynchronised, only cancelled and closed.
    mid_write: bool,
    /// I/O failed: nothing to drain.
    dead: bool,
    /// A message over `max_message` arrived: cancel, then close (not drained).
    oversized: bool,
    /// Largest backend message read into memory.
    max_message: usize,
    cancel: Option<CancelKey>,
}

impl WireConn {
    /// Connects and authenticates as `DATABASE_URL` says.
    pub async fn connect(config: &tokio_postgres::Config) -> std::io::Result<WireConn> {
        let timeout = config.get_connect_timeout().copied().unwrap_or(Duration::from_secs(5));
        tokio::time::timeout(timeout, Self::connect_inner(config)).await.map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting to Postgres timed out"))?
    }

    async fn connect_inner(config: &tokio_postgres::Config) -> std::io::Result<WireConn> {
        let hosts = config.get_hosts();
        let ports = config.get_ports();
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "DATABASE_URL names no host");
        for (i, host) in hosts.iter().enumerate() {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            let stream = match host {
                Host::Tcp(h) => tokio::net::TcpStream::connect((h.as_str(), port)).await.map(|s| {
                    let _ = s.set_nodelay(true);
                    Stream::Tcp(s)
                }),
                Host::Unix(dir) => tokio::net::UnixStream::connect(dir.join(format!(".s.PGSQL.{port}"))).await.map(Stream::Unix),
            };
            match stream {
                Ok(s) => {
                    let mut conn = WireConn {
                        stream: s,
                        read: BytesMut::with_capacity(16 * 1024),
                        write: BytesMut::with_capacity(4 * 1024),
                        statements: Statements::default(),
                        next_statement: 0,
                        broken: false,
                        mid_write: false,
                        dead: false,
                        oversized: false,
                        max_message: usize::MAX,
                        cancel: None,
                    };
                    let key = conn.startup(config).await?;
                    conn.cancel = key.map(|(pid, secret)| CancelKey { host: host.clone(), port, pid, secret });
                    return Ok(conn);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Authenticates; returns the backend's cancel key.
    async fn startup(&mut self, config: &tokio_postgres::Config) -> std::io::Result<Option<(i32, i32)>> {
        let user = config.get_user().unwrap_or("postgres");
        let db = config.get_dbname().unwrap_or(user);
        let mut params = vec![("user", user), ("database", db), ("application_name", "pgstack"), ("client_encoding", "UTF8")];
        if let Some(o) = config.get_options() {
            params.push(("options", o));
        }
        let mut key = None;
        frontend::startup_message(params.iter().copied(), &mut self.write)?;
        self.flush().await?;
        let password = config.get_password().unwrap_or_default().to_vec();
        let mut scram: Option<ScramSha256> = None;
        loop {
            match self.next_message().await? {
                backend::Message::AuthenticationOk => {}
                backend::Message::AuthenticationCleartextPassword => {
                    frontend::password_message(&password, &mut self.write)?;
                    self.flush().await?;
                }
                backend::Message::AuthenticationMd5Password(body) => {
                    let hash = postgres_protocol::authentication::md5_hash(user.as_bytes(), &password, body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.write)?;
                    self.flush().await?;
                }
                backend::Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    let mut found = false;
                    while let Some(m) = mechanisms.next()? {
                        found |= m == "SCRAM-SHA-256";
                    }
                    if !found {
                        return Err(other("the server offers no SCRAM-SHA-256 authentication"));
                    }
                    let s = ScramSha256::new(&password, ChannelBinding::unsupported());
                    frontend::sasl_initial_response("SCRAM-SHA-256", s.message(), &mut self.write)?;
                    self.flush().await?;
                    scram = Some(s);
                }
                backend::Message::AuthenticationSaslContinue(body) => {
                    let s = scram.as_mut().ok_or_else(|| other("unexpected SASL message"))?;
                    s.update(body.data())?;
                    frontend::sasl_response(s.message(), &mut self.write)?;
                    self.flush().await?;
                }
                backend::Message::AuthenticationSaslFinal(body) => {
                    scram.as_mut().ok_or_else(|| other("unexpected SASL message"))?.finish(body.data())?;
                }
                backend::Message::ErrorResponse(body) => {
                    let f = DbFields::parse(&body)?;
                    return Err(other(&format!("{}: {}", f.code, f.message)));
                }
                backend::Message::ReadyForQuery(_) => return Ok(key),
                backend::Message::BackendKeyData(k) => key = Some((k.process_id(), k.secret_key())),
                backend::Message::ParameterStatus(_) | backend::Message::NoticeResponse(_) => {}
                _ => return Err(other("unsupported authentication method")),
            }
        }
    }

    /// Whether this connection may serve another request.
    pub fn is_usable(&self) -> bool {
        !self.broken
    }

    /// After an interrupted pipeline (the request ended while Postgres was still
    /// working on it): cancels the running statement and reads what is left up to
    /// the pipeline's ReadyForQuery, so the backend is idle and the connection in
    /// step again. False when that cannot be done (then the caller closes it; the
    /// cancel has still been sent).
    pub async fn recover(&mut self) -> bool {
        if !self.broken {
            return true;
        }
        if self.dead {
            return false;
        }
        let cancelled = match &self.cancel {
            Some(k) => send_cancel(k).await.is_ok(),
            None => false,
        };
        if self.mid_write || !cancelled {
            return false;
        }
        // Messages are skipped without being buffered (an oversized result is read
        // away in small pieces), up to the pipeline's ReadyForQuery.
        let drain = self.skip_to_ready();
        match tokio::time::timeout(RECOVER_TIMEOUT, drain).await {
            Ok(Ok(())) => {
                self.read.clear();
                (self.broken, self.oversized) = (false, false);
                true
            }
            _ => false,
        }
    }

    /// Runs `steps` as one implicit transaction (one Sync): every step's rows, or the
    /// first error (after which Postgres skipped the rest and rolled back).
    pub async fn pipeline(&mut self, steps: &[Step<'_>]) -> Result<Vec<StepResult>, WireError> {
        // Broken until the last ReadyForQuery: a future dropped midway (the HTTP client
        // went away) leaves the connection out of step, and the pool discards it.
        self.broken = true;
        if self.statements.len() + steps.len() > MAX_STATEMENTS && self.statements.len() + unknown(steps, &self.statements) > MAX_STATEMENTS {
            self.close_all().await?;
        }
        self.write.clear();
        let fresh = encode(steps, &self.statements, &mut self.next_statement, &mut self.write)?;
        let mut gather = Gather::new(steps.len(), self.max_message);
        // Results are read while the pipeline is still being written: Postgres
        // answers each statement as it goes, and once its send buffer is full it
        // stops reading ours — a pipeline bigger than the two socket buffers (a
        // realtime check for a thousand viewers) would otherwise wait forever.
        self.mid_write = true;
        let mut ready = self.write_reading(&mut gather).await?;
        self.mid_write = false;
        while !ready {
            let message = self.next_message().await?;
            ready = self.gathered(&mut gather, message)?;
        }
        for (sql, name) in fresh.into_iter().take(gather.parsed) {
            self.statements.insert(sql, name);
        }
        self.broken = false;
        gather.finish()
    }

    /// Reads and discards messages up to and including the next ReadyForQuery,
    /// holding at most one small buffer whatever the messages' sizes.
    async fn skip_to_ready(&mut self) -> std::io::Result<()> {
        let mut scratch = vec![0u8; 64 * 1024];
        loop {
            while self.read.len() < 5 {
                if self.stream.read_buf(&mut self.read).await? == 0 {
                    return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "Postgres closed the connection"));
                }
            }
            let kind = self.read[0];
            let total = 1 + u32::from_be_bytes([self.read[1], self.read[2], self.read[3], self.read[4]]) as usize;
            if self.read.len() >= total {
                let _ = self.read.split_to(total);
            } else {
                let mut remaining = total - self.read.len();
                self.read.clear();
                while remaining > 0 {
                    let n = remaining.min(scratch.len());
                    let got = self.stream.read(&mut scratch[..n]).await?;
                    if got == 0 {
                        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "Postgres closed the connection"));
                    }
                    remaining -= got;
                }
            }
            if kind == b'Z' {
                return Ok(());
            }
        }
    }

    /// Forgets every prepared statement (server and cache).
    async fn close_all(&mut self) -> std::io::Result<()> {
        self.write.clear();
        frontend::query("DEALLOCATE ALL", &mut self.write)?;
        self.mid_write = true;
        self.flush().await?;
        self.mid_write = false;
        loop {
            if let backend::Message::ReadyForQuery(_) = self.next_message().await? {
                break;
            }
        }
        self.statements.clear();
        Ok(())
    }

    /// Hands `message` to `gather`; true at the pipeline's end.
    fn gathered(&mut self, gather: &mut Gather, message: backend::Message) -> Result<bool, WireError> {
        let ready = gather.take(message)?;
        if gather.too_large {
            (self.broken, self.oversized) = (true, true);
            return Err(WireError::TooLarge(self.max_message));
        }
        Ok(ready)
    }

    /// Writes the whole write buffer, handing what arrives meanwhile to `gather`;
    /// true when the pipeline's end arrived too.
    async fn write_reading(&mut self, gather: &mut Gather) -> Result<bool, WireError> {
        use tokio::io::Interest;
        let (mut at, mut ready) = (0, false);
        let result = loop {
            if at == self.write.len() {
                break Ok(ready);
            }
            let io = match self.stream.ready(Interest::READABLE | Interest::WRITABLE).await {
                Ok(io) => io,
                Err(e) => break Err(e.into()),
            };
            if io.is_writable() {
                match self.stream.try_write(&self.write[at..]) {
                    Ok(n) => at += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => break Err(e.into()),
                }
            }
            if io.is_readable() && !ready {
                if self.read.capacity() - self.read.len() < 4096 {
                    self.read.reserve(16 * 1024);
                }
                match self.stream.try_read_buf(&mut self.read) {
                    Ok(0) => break Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "Postgres closed the connection").into()),
                    Ok(_) => {
                        while let Some(m) = self.buffered_message()? {
                            if self.gathered(gather, m)? {
                                ready = true;
                                break;
                            }
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => break Err(e.into()),
                }
            }
        };
        self.write.clear();
        if result.is_err() {
            (self.broken, self.dead) = (true, true);
        }
        result
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        let r = self.stream.write_all(&self.write).await;
        self.write.clear();
        if r.is_err() {
            (self.broken, self.dead) = (true, true);
        }
        r
    }

    /// The next whole message already read, if any. The header (type byte + length)
    /// tells a message's size before its body is read: one over the limit is
    /// refused, not buffered.
    fn buffered_message(&mut self) -> std::io::Result<Option<backend::Message>> {
        if self.read.len() >= 5 {
            let len = u32::from_be_bytes([self.read[1], self.read[2], self.read[3], self.read[4]]) as usize;
            if len > self.max_message {
                (self.broken, self.oversized) = (true, true);
                return Err(std::io::Error::other(Oversized(self.max_message)));
            }
        }
        backend::Message::parse(&mut self.read)
    }

    async fn next_message(&mut self) -> std::io::Result<backend::Message> {
        loop {
            if let Some(m) = self.buffered_message()? {
                return Ok(m);
            }
            if self.read.capacity() - self.read.len() < 4096 {
                self.read.reserve(16 * 1024);
            }
            match self.stream.read_buf(&mut self.read).await {
                Ok(0) => {
                    (self.broken, self.dead) = (true, true);
                    return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "Postgres closed the connection"));
                }
                Ok(_) => {}
                Err(e) => {
                    (self.broken, self.dead) = (true, true);
                    return Err(e);
                }
            }
        }
    }
}

/// How many of `steps` may need a statement prepared (at most): those whose text is
/// not among `known` (a pipeline of many steps repeating a few statements, e.g. a
/// realtime check for many viewers, prepares none once they are known).
fn unknown(steps: &[Step<'_>], known: &Statements) -> usize {
    steps.iter().filter(|s| s.text_params || !known.contains_key(s.sql)).count()
}

/// Encodes `steps` into `buf` as one pipeline: a Parse for each statement `known`
/// lacks (named `s<n>` from `next`), Bind and Execute for each step, one Sync. Returns
/// the new statements (text, name) in the order of their Parse.
fn encode(steps: &[Step<'_>], known: &Statements, next: &mut u64, buf: &mut BytesMut) -> std::io::Result<Vec<(String, String)>> {
    let mut fresh: Vec<(String, String)> = Vec::new();
    for step in steps {
        // A statement with declared parameters is a different prepared statement
        // for each parameter count: the count is part of its key (and of its text,
        // as a comment, so the cache and Postgres agree).
        let text: std::borrow::Cow<str> = if step.text_params { format!("{} /* {} text parameters */", step.sql, step.params.len()).into() } else { step.sql.into() };
        let name = match known.get(text.as_ref()).or_else(|| fresh.iter().find(|(t, _)| t == text.as_ref()).map(|(_, n)| n)) {
            Some(n) => n.clone(),
            None => {
                *next += 1;
                let n = format!("s{next}");
                const TEXT_OID: u32 = 25;
                let declared = if step.text_params { step.params.len() } else { 0 };
                frontend::parse(&n, &text, std::iter::repeat_n(TEXT_OID, declared), buf)?;
                fresh.push((text.into_owned(), n.clone()));
                n
            }
        };
        frontend::bind(
            "",
            &name,
            std::iter::empty(),
            step.params.iter(),
            |v, buf| match v {
                Some(s) => {
                    buf.extend_from_slice(s.as_bytes());
                    Ok(IsNull::No)
                }
                None => Ok(IsNull::Yes),
            },
            std::iter::empty(),
            buf,
        )
        .map_err(|e| match e {
            frontend::BindError::Conversion(e) => other(&e.to_string()),
            frontend::BindError::Serialization(e) => e,
        })?;
        frontend::execute("", 0, buf)?;
    }
    frontend::sync(buf);
    Ok(fresh)
}

/// Gathers one pipeline's results from its messages, up to its ReadyForQuery.
pub(crate) struct Gather {
    results: Vec<StepResult>,
    current: StepResult,
    /// ParseComplete messages seen (the pipeline's new statements, in order).
    parsed: usize,
    row_bytes: usize,
    max: usize,
    /// The rows went over `max`: they are dropped, the rest is read and ignored.
    too_large: bool,
    error: Option<DbFields>,
}

impl Gather {
    fn new(steps: usize, max: usize) -> Gather {
        Gather { results: Vec::with_capacity(steps), current: StepResult::default(), parsed: 0, row_bytes: 0, max, too_large: false, error: None }
    }

    /// Takes the pipeline's next message; true at its ReadyForQuery.
    fn take(&mut self, message: backend::Message) -> Result<bool, WireError> {
        match message {
            backend::Message::ParseComplete => self.parsed += 1,
            backend::Message::BindComplete | backend::Message::NoData | backend::Message::RowDescription(_) => {}
            backend::Message::DataRow(row) => {
                let buf = row.buffer();
                // All rows together stay within the limit of one message (a
                // statement may answer row by row).
                self.row_bytes += buf.len() + ROW_COST;
                if self.too_large || self.row_bytes > self.max {
                    self.too_large = true;
                    self.current.rows = Vec::new();
                    self.results = Vec::new();
                    return Ok(false);
                }
                let mut values = Vec::new();
                let mut ranges = row.ranges();
                while let Some(r) = ranges.next()? {
                    values.push(match r {
                        Some(r) => Some(std::str::from_utf8(&buf[r]).map_err(|e| other(&e.to_string()))?.to_owned()),
                        None => None,
                    });
                }
                self.current.rows.push(values);
            }
            backend::Message::CommandComplete(body) => {
                self.current.affected = body.tag()?.rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
                self.results.push(std::mem::take(&mut self.current));
            }
            backend::Message::EmptyQueryResponse => self.results.push(std::mem::take(&mut self.current)),
            backend::Message::ErrorResponse(body) => {
                let f = DbFields::parse(&body)?;
                self.error.get_or_insert(f);
            }
            backend::Message::ReadyForQuery(_) => return Ok(true),
            backend::Message::NoticeResponse(_) | backend::Message::ParameterStatus(_) | backend::Message::NotificationResponse(_) => {}
            _ => return Err(WireError::Io(other("unexpected message in a pipeline"))),
        }
        Ok(false)
    }

    /// The results, or the pipeline's first error.
    fn finish(self) -> Result<Vec<StepResult>, WireError> {
        match (self.too_large, self.error) {
            // Before the error: the statement may have been cancelled for it.
            (true, _) => Err(WireError::TooLarge(self.max)),
            (false, Some(e)) => Err(WireError::Db(e)),
            (false, None) => Ok(self.results),
        }
    }
}

fn other(msg: &str) -> std::io::Error {
    std::io::Error::other(msg.to_owned())
}

/// How long an interrupted connection may take to become idle after its cancel.
const RECOVER_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends a CancelRequest for `k`'s backend on a connection of its own.
async fn send_cancel(k: &CancelKey) -> std::io::Result<()> {
    let mut buf = BytesMut::new();
    frontend::cancel_request(k.pid, k.secret, &mut buf);
    let send = async {
        match &k.host {
            Host::Tcp(h) => {
                let mut s = tokio::net::TcpStream::connect((h.as_str(), k.port)).await?;
                s.write_all(&buf).await?;
                // Postgres closes the socket once it has read the request.
                let _ = s.read(&mut [0u8; 1]).await;
            }
            Host::Unix(dir) => {
                let mut s = tokio::net::UnixStream::connect(dir.join(format!(".s.PGSQL.{}", k.port))).await?;
                s.write_all(&buf).await?;
                let _ = s.read(&mut [0u8; 1]).await;
            }
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(5), send).await.map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "cancel request timed out"))?
}

mod lease;
pub(crate) mod mux;
pub use lease::{pool, Lease, WireManager, WirePool};
