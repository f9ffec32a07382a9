//! The crash-safe usage ledger: append-only segment files of checksummed records.
//!
//! Frame: `len: u32 LE | crc32(payload): u32 LE | payload` where the payload is the JSON of a
//! [`Sequenced`] record. One writer thread owns the active segment and commits in groups: it
//! takes every append waiting, writes them, calls `fsync` once, and only then answers each
//! caller, so "appended" always means "on disk". On start the ledger replays every segment and
//! cuts a torn tail (a frame cut short or failing its checksum) instead of failing.

use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

use hearth_crds::usage::{Sequenced, UsageRecord};

/// Segments roll over past this size.
pub const DEFAULT_SEGMENT_BYTES: u64 = 4 << 20;
/// Largest frame payload accepted on replay; anything bigger is a torn or corrupt length.
const MAX_FRAME_BYTES: u32 = 1 << 20;
const FRAME_HEADER: usize = 8;

/// Ledger failures.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// A filesystem operation failed.
    #[error("ledger {path}: {source}")]
    Io {
        /// File or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A record could not be encoded.
    #[error("ledger record encoding: {0}")]
    Encode(#[from] serde_json::Error),
    /// The writer thread is gone (the process is shutting down).
    #[error("ledger writer stopped")]
    Stopped,
}

impl LedgerError {
    /// Bounded label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Io { .. } => "io",
            Self::Encode(_) => "encode",
            Self::Stopped => "stopped",
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LedgerError + '_ {
    move |source| LedgerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Written and fsync'd at this sequence.
    Durable(u64),
    /// A record with this request id is already in the ledger; nothing was written.
    Duplicate,
}

enum Command {
    Append(UsageRecord, oneshot::Sender<Result<Appended, LedgerError>>),
    Ack(u64, oneshot::Sender<Result<(), LedgerError>>),
}

/// Handle to the ledger; cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    dir: PathBuf,
    commands: mpsc::Sender<Command>,
    durable: Arc<AtomicU64>,
    acked: Arc<AtomicU64>,
}

fn segment_name(first_sequence: u64) -> String {
    format!("segment-{first_sequence:020}.log")
}

fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LedgerError> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("segment-"))
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(first) = first {
            segments.push((first, path));
        }
    }
    segments.sort();
    Ok(segments)
}

/// Reads whole frames from `reader`; returns the records and the offset after the last good one.
pub fn read_frames(reader: &mut impl Read) -> (Vec<Sequenced>, u64) {
    let mut records = Vec::new();
    let mut good = 0u64;
    loop {
        let mut header = [0u8; FRAME_HEADER];
        if reader.read_exact(&mut header).is_err() {
            break;
        }
        let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let checksum = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if length == 0 || length > MAX_FRAME_BYTES {
            break;
        }
        let mut payload = vec![0u8; length as usize];
        if reader.read_exact(&mut payload).is_err() || crc32fast::hash(&payload) != checksum {
            break;
        }
        let Ok(record) = serde_json::from_slice::<Sequenced>(&payload) else {
            break;
        };
        records.push(record);
        good += FRAME_HEADER as u64 + u64::from(length);
    }
    (records, good)
}

fn read_acked(dir: &Path) -> Result<u64, LedgerError> {
    let path = dir.join("acked");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text.trim().parse().unwrap_or(0)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(source) => Err(LedgerError::Io { path, source }),
    }
}

/// Writes `acked` atomically: temporary file, fsync, rename, fsync of the folder.
fn write_acked(dir: &Path, cursor: u64) -> Result<(), LedgerError> {
    let temporary = dir.join("acked.tmp");
    let mut file = File::create(&temporary).map_err(io(&temporary))?;
    file.write_all(cursor.to_string().as_bytes())
        .map_err(io(&temporary))?;
    file.sync_all().map_err(io(&temporary))?;
    let path = dir.join("acked");
    std::fs::rename(&temporary, &path).map_err(io(&path))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), LedgerError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

struct Writer {
    dir: PathBuf,
    segment_bytes: u64,
    active: File,
    active_path: PathBuf,
    active_size: u64,
    next_sequence: u64,
    /// Request ids of un-acknowledged records, for idempotent appends.
    request_ids: HashSet<String>,
    /// The same ids in sequence order, so an ack can forget the acknowledged ones.
    ids_in_order: VecDeque<(u64, String)>,
    durable: Arc<AtomicU64>,
    acked: Arc<AtomicU64>,
}

impl Writer {
    fn roll(&mut self) -> Result<(), LedgerError> {
        let path = self.dir.join(segment_name(self.next_sequence));
        self.active = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        self.active_path = path;
        self.active_size = 0;
        sync_dir(&self.dir)
    }

    /// Writes a batch and fsyncs once; returns each append's result in order.
    fn commit(&mut self, batch: Vec<UsageRecord>) -> Vec<Result<Appended, LedgerError>> {
        let mut results = Vec::with_capacity(batch.len());
        let mut buffer = Vec::new();
        let mut last = None;
        for record in batch {
            if self.request_ids.contains(&record.request_id) {
                results.push(Ok(Appended::Duplicate));
                continue;
            }
            let sequenced = Sequenced {
                sequence: self.next_sequence,
                record,
            };
            match serde_json::to_vec(&sequenced) {
                Ok(payload) => {
                    let length = u32::try_from(payload.len()).unwrap_or(u32::MAX);
                    buffer.extend_from_slice(&length.to_le_bytes());
                    buffer.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
                    buffer.extend_from_slice(&payload);
                    self.request_ids.insert(sequenced.record.request_id.clone());
                    self.ids_in_order
                        .push_back((sequenced.sequence, sequenced.record.request_id));
                    results.push(Ok(Appended::Durable(self.next_sequence)));
                    last = Some(self.next_sequence);
                    self.next_sequence += 1;
                }
                Err(error) => results.push(Err(LedgerError::Encode(error))),
            }
        }
        if buffer.is_empty() {
            return results;
        }
        let written = self
            .active
            .write_all(&buffer)
            .and_then(|()| self.active.sync_data());
        if let Err(error) = written {
            // Nothing in this batch is acknowledged; cut back so the next batch starts clean.
            let _ = self.active.set_len(self.active_size);
            let message = error.to_string();
            return results
                .into_iter()
                .map(|r| match r {
                    Ok(Appended::Durable(_)) => Err(LedgerError::Io {
                        path: self.active_path.clone(),
                        source: std::io::Error::other(message.clone()),
                    }),
                    other => other,
                })
                .collect();
        }
        self.active_size += buffer.len() as u64;
        if let Some(last) = last {
            self.durable.store(last, Ordering::Release);
        }
        if self.active_size >= self.segment_bytes
            && let Err(error) = self.roll()
        {
            tracing::warn!(%error, "could not roll the ledger segment; continuing in the current one");
        }
        results
    }

    /// Records the cursor and deletes segments whose every record is at or below it.
    fn ack(&mut self, cursor: u64) -> Result<(), LedgerError> {
        let cursor = cursor.min(self.durable.load(Ordering::Acquire));
        if cursor <= self.acked.load(Ordering::Acquire) {
            return Ok(());
        }
        write_acked(&self.dir, cursor)?;
        self.acked.store(cursor, Ordering::Release);
        // Past the ack the aggregator owns deduplication; keep memory bounded by unacked records.
        while self
            .ids_in_order
            .front()
            .is_some_and(|(sequence, _)| *sequence <= cursor)
        {
            if let Some((_, id)) = self.ids_in_order.pop_front() {
                self.request_ids.remove(&id);
            }
        }
        let segments = list_segments(&self.dir)?;
        for window in segments.windows(2) {
            let ((_, path), (next_first, _)) = (&window[0], &window[1]);
            // Every record of this segment is below the next segment's first sequence.
            if *next_first <= cursor + 1 && *path != self.active_path {
                std::fs::remove_file(path).map_err(io(path))?;
            }
        }
        Ok(())
    }

    fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        while let Some(first) = commands.blocking_recv() {
            let mut appends = Vec::new();
            let mut pending = Some(first);
            // Group commit: take everything already queued behind the first command.
            while let Some(command) = pending.take().or_else(|| commands.try_recv().ok()) {
                match command {
                    Command::Append(record, reply) => appends.push((record, reply)),
                    Command::Ack(cursor, reply) => {
                        self.flush(&mut appends);
                        let _ = reply.send(self.ack(cursor));
                    }
                }
            }
            self.flush(&mut appends);
        }
    }

    fn flush(&mut self, appends: &mut Vec<(UsageRecord, oneshot::Sender<Result<Appended, LedgerError>>)>) {
        if appends.is_empty() {
            return;
        }
        let (records, replies): (Vec<_>, Vec<_>) = std::mem::take(appends).into_iter().unzip();
        for (reply, result) in replies.into_iter().zip(self.commit(records)) {
            let _ = reply.send(result);
        }
    }
}

impl Ledger {
    /// Opens (creating) the ledger in `dir`, replaying it and cutting a torn tail.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<Self, LedgerError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let acked = read_acked(dir)?;
        let mut request_ids = HashSet::new();
        let mut ids_in_order = VecDeque::new();
        let mut next_sequence = acked + 1;
        let mut last_segment = None;
        for (first, path) in list_segments(dir)? {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io(&path))?;
            let (records, good) = read_frames(&mut BufReader::new(&mut file));
            let length = file.metadata().map_err(io(&path))?.len();
            if good < length {
                tracing::warn!(segment = %path.display(), cut = length - good, "cutting a torn ledger tail");
                file.set_len(good).map_err(io(&path))?;
                file.sync_all().map_err(io(&path))?;
            }
            for record in records.into_iter().filter(|r| r.sequence > acked) {
                next_sequence = next_sequence.max(record.sequence + 1);
                request_ids.insert(record.record.request_id.clone());
                ids_in_order.push_back((record.sequence, record.record.request_id));
            }
            next_sequence = next_sequence.max(first);
            last_segment = Some((path, good));
        }
        let (active_path, active_size) = match last_segment {
            Some(last) => last,
            None => (dir.join(segment_name(next_sequence)), 0),
        };
        let active = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&active_path)
            .map_err(io(&active_path))?;
        sync_dir(dir)?;
        let durable = Arc::new(AtomicU64::new(next_sequence - 1));
        let acked = Arc::new(AtomicU64::new(acked));
        let writer = Writer {
            dir: dir.to_path_buf(),
            segment_bytes,
            active,
            active_path,
            active_size,
            next_sequence,
            request_ids,
            ids_in_order,
            durable: durable.clone(),
            acked: acked.clone(),
        };
        let (commands, receiver) = mpsc::channel(4096);
        std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(io(dir))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            commands,
            durable,
            acked,
        })
    }

    /// Appends a record; resolves once it is fsync'd (or known to be a duplicate).
    pub async fn append(&self, record: UsageRecord) -> Result<Appended, LedgerError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Append(record, reply))
            .await
            .map_err(|_| LedgerError::Stopped)?;
        answer.await.map_err(|_| LedgerError::Stopped)?
    }

    /// Marks every record up to `cursor` as safely stored elsewhere; their segments may go.
    pub async fn ack(&self, cursor: u64) -> Result<(), LedgerError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Ack(cursor, reply))
            .await
            .map_err(|_| LedgerError::Stopped)?;
        answer.await.map_err(|_| LedgerError::Stopped)?
    }

    /// Highest durable sequence (0 when empty).
    pub fn durable_sequence(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Highest acknowledged sequence.
    pub fn acked_sequence(&self) -> u64 {
        self.acked.load(Ordering::Acquire)
    }

    /// Durable records with a sequence above `after`, in order, at most `limit`.
    pub fn read_after(&self, after: u64, limit: usize) -> Result<Vec<Sequenced>, LedgerError> {
        let durable = self.durable_sequence();
        let segments = list_segments(&self.dir)?;
        let mut out = Vec::new();
        for (index, (_, path)) in segments.iter().enumerate() {
            // Skip segments that end at or before the cursor.
            if segments
                .get(index + 1)
                .is_some_and(|(next_first, _)| *next_first <= after + 1)
            {
                continue;
            }
            let file = match File::open(path) {
                Ok(file) => file,
                // Deleted by a concurrent ack: those records were at or below the ack cursor.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(LedgerError::Io {
                        path: path.clone(),
                        source,
                    });
                }
            };
            let mut reader = BufReader::new(file);
            reader.seek(SeekFrom::Start(0)).map_err(io(path))?;
            let (records, _) = read_frames(&mut reader);
            for record in records {
                if record.sequence > after && record.sequence <= durable {
                    out.push(record);
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> UsageRecord {
        UsageRecord {
            request_id: id.into(),
            tenant: "ns/acme".into(),
            tier: "gold".into(),
            model: "m".into(),
            prompt_tokens: 3,
            completion_tokens: 5,
            estimated: false,
            status: 200,
            streamed: true,
            started_at_ms: 1,
            finished_at_ms: 2,
            gpu_milliseconds: 0,
            rejected: None,
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hearth-ledger-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn ids(records: &[Sequenced]) -> Vec<String> {
        records.iter().map(|r| r.record.request_id.clone()).collect()
    }

    #[tokio::test]
    async fn appends_survive_reopen_and_duplicates_are_ignored() {
        let dir = temp_dir("reopen");
        let ledger = Ledger::open(&dir, DEFAULT_SEGMENT_BYTES).expect("opens");
        assert_eq!(
            ledger.append(record("a")).await.expect("append"),
            Appended::Durable(1)
        );
        assert_eq!(
            ledger.append(record("b")).await.expect("append"),
            Appended::Durable(2)
        );
        assert_eq!(
            ledger.append(record("a")).await.expect("append"),
            Appended::Duplicate
        );
        drop(ledger);
        let ledger = Ledger::open(&dir, DEFAULT_SEGMENT_BYTES).expect("reopens");
        assert_eq!(
            ledger.append(record("b")).await.expect("append"),
            Appended::Duplicate,
            "ids survive restarts"
        );
        assert_eq!(
            ledger.append(record("c")).await.expect("append"),
            Appended::Durable(3)
        );
        assert_eq!(ids(&ledger.read_after(0, 100).expect("reads")), ["a", "b", "c"]);
        assert_eq!(ids(&ledger.read_after(2, 100).expect("reads")), ["c"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_not_fatal() {
        let dir = temp_dir("torn");
        let ledger = Ledger::open(&dir, DEFAULT_SEGMENT_BYTES).expect("opens");
        ledger.append(record("a")).await.expect("append");
        ledger.append(record("b")).await.expect("append");
        drop(ledger);
        let (_, segment) = list_segments(&dir).expect("lists").pop().expect("a segment");
        let whole = std::fs::metadata(&segment).expect("meta").len();
        // A crash mid-write: half a frame header and payload at the end.
        let mut file = OpenOptions::new().append(true).open(&segment).expect("open");
        file.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'{', b'"'])
            .expect("write");
        drop(file);
        let ledger = Ledger::open(&dir, DEFAULT_SEGMENT_BYTES).expect("reopens despite the torn tail");
        assert_eq!(
            std::fs::metadata(&segment).expect("meta").len(),
            whole,
            "tail cut back"
        );
        assert_eq!(
            ledger.append(record("c")).await.expect("append"),
            Appended::Durable(3)
        );
        assert_eq!(ids(&ledger.read_after(0, 100).expect("reads")), ["a", "b", "c"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_corrupt_checksum_ends_the_replay_there() {
        let dir = temp_dir("crc");
        let ledger = Ledger::open(&dir, DEFAULT_SEGMENT_BYTES).expect("opens");
        ledger.append(record("a")).await.expect("append");
        ledger.append(record("b")).await.expect("append");
        drop(ledger);
        let (_, segment) = list_segments(&dir).expect("lists").pop().expect("a segment");
        let mut bytes = std::fs::read(&segment).expect("read");
        let last = bytes.len() - 2;
        bytes[last] ^= 0xff;
        std::fs::write(&segment, bytes).expect("write");
        let ledger = Ledger::open(&dir, DEFAULT_SEGMENT_BYTES).expect("reopens");
        assert_eq!(ids(&ledger.read_after(0, 100).expect("reads")), ["a"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn ack_deletes_whole_segments_and_sequences_continue() {
        let dir = temp_dir("ack");
        // Tiny segments: roughly one record each.
        let ledger = Ledger::open(&dir, 64).expect("opens");
        for id in ["a", "b", "c", "d"] {
            ledger.append(record(id)).await.expect("append");
        }
        assert_eq!(
            list_segments(&dir).expect("lists").len(),
            5,
            "four full segments and an empty active one"
        );
        ledger.ack(2).await.expect("ack");
        assert_eq!(ids(&ledger.read_after(0, 100).expect("reads")), ["c", "d"]);
        assert_eq!(list_segments(&dir).expect("lists").len(), 3);
        drop(ledger);
        let ledger = Ledger::open(&dir, 64).expect("reopens");
        assert_eq!(ledger.acked_sequence(), 2);
        assert_eq!(
            ledger.append(record("e")).await.expect("append"),
            Appended::Durable(5)
        );
        ledger.ack(5).await.expect("ack all");
        assert!(ledger.read_after(0, 100).expect("reads").is_empty());
        drop(ledger);
        let ledger = Ledger::open(&dir, 64).expect("reopens after everything was acked");
        assert_eq!(
            ledger.append(record("f")).await.expect("append"),
            Appended::Durable(6)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn concurrent_appends_are_group_committed_in_order() {
        let dir = temp_dir("group");
        let ledger = Ledger::open(&dir, DEFAULT_SEGMENT_BYTES).expect("opens");
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let ledger = ledger.clone();
                tokio::spawn(async move { ledger.append(record(&format!("r{i}"))).await })
            })
            .collect();
        let mut sequences = Vec::new();
        for task in tasks {
            match task.await.expect("task").expect("append") {
                Appended::Durable(sequence) => sequences.push(sequence),
                Appended::Duplicate => panic!("ids are unique"),
            }
        }
        sequences.sort_unstable();
        assert_eq!(sequences, (1..=200).collect::<Vec<u64>>());
        assert_eq!(ledger.read_after(0, 1000).expect("reads").len(), 200);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
