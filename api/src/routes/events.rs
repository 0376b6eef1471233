//! `GET /v1/runs/{run_id}/events`: the run's events as Server-Sent Events.
//!
//! A relay task per client subscribes to the run's live events through the
//! process's [`TailHub`](switchyard_common::bus::tail::TailHub), then
//! replays the durable backlog from PostgreSQL, then relays what arrives
//! live. Sequence numbers make the seam exact: anything at or below the last
//! sent id is dropped, and a gap is filled from the run's Redis stream or,
//! failing that, PostgreSQL before going on.
//!
//! A quiet stream costs next to nothing: when nothing arrives the relay
//! looks for itself after [`FIRST_QUIET_CHECK`], then twice as long each
//! time up to [`LAST_QUIET_CHECK`], in the run's Redis stream; PostgreSQL
//! is read only when that stream is missing or does not continue where the
//! client is, and otherwise every [`DATABASE_CHECK`] (so that a run whose
//! end reached PostgreSQL but not Redis still ends its streams). The hub
//! cuts every relay loose when its connection to Redis drops or comes
//! back, and a relay cut loose reads PostgreSQL at once: what was
//! published while the hub could not hear is not waited for.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use switchyard_common::bus;
use switchyard_common::db::{self, runs::RunRow};
use switchyard_common::domain::RunId;
use switchyard_common::events::SequencedEvent;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::CurrentUser;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Path, Query};
use crate::limits::StreamSlot;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events))
}

/// Comment lines keep idle connections open through proxies.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long the relay waits for a live event before checking by itself;
/// doubled after each quiet check, back to this after an event.
const FIRST_QUIET_CHECK: Duration = Duration::from_secs(1);
/// The longest wait between two checks of a quiet stream.
const LAST_QUIET_CHECK: Duration = Duration::from_secs(60);
/// How often a quiet stream reads PostgreSQL even though Redis answers.
const DATABASE_CHECK: Duration = Duration::from_secs(600);
/// Backlog page size.
const PAGE: i64 = 500;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventParams {
    /// Resume after this event id (like `Last-Event-ID`).
    pub after: Option<i64>,
}

/// The run's events: every event after `Last-Event-ID` (or `?after=`), then
/// the live ones; the stream ends after the terminal event.
#[utoipa::path(get, path = "/v1/runs/{run_id}/events", tag = "runs",
    params(("run_id" = String, Path), EventParams,
           ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this event")),
    responses((status = 200, content_type = "text/event-stream",
               description = "`id: n`, `event: type`, `data: json` per event"),
              (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody,
               description = "`Last-Event-ID` (or `after`) is past the run's last event")))]
pub async fn events(
    State(app): State<AppState>,
    user: CurrentUser,
    Path(run_id): Path<RunId>,
    Query(params): Query<EventParams>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .filter(|n| *n >= 0)
                .ok_or_else(|| ApiError::BadRequest("Last-Event-ID: must be an event id".into()))?,
        ),
    };
    if params.after.is_some_and(|n| n < 0) {
        return Err(ApiError::Validation("after: must be 0 or more".into()));
    }
    let run = super::runs::load_readable(&app, &user, run_id).await?;
    let after = last_event_id.or(params.after).unwrap_or(0);
    if after > 0 {
        check_position(&app, &run, after).await?;
    }
    let slot = app.limiter.open_stream(&user).await?;
    Ok(stream(app, run_id, Start::After(after), slot).into_response())
}

/// Refuse to resume after an id the server does not have: one of an
/// ended run's events, or one that PostgreSQL and the run's Redis stream
/// both lack (it came from a worker lost together with Redis's copy, and
/// the run's next events may be numbered again from what was kept). The
/// client is told so rather than fed ids it may already hold.
async fn check_position(app: &AppState, run: &RunRow, after: i64) -> ApiResult<()> {
    let stored = db::events::last_seq(&app.pool, run.id).await?;
    if after <= stored {
        return Ok(());
    }
    if !run.status.is_terminal() {
        let mut conn = app.redis.clone();
        match bus::last_published(&mut conn, &app.keys, run.id).await {
            Ok(Some(published)) if after <= published => return Ok(()),
            Ok(_) => {}
            // Redis cannot tell: the client may well be right.
            Err(_) => return Ok(()),
        }
    }
    Err(ApiError::Conflict(format!(
        "Last-Event-ID {after} is past the run's last event the server has ({stored}); \
         events after it were lost and may be numbered again: read the run from 0 \
         (or from {stored})"
    )))
}

/// Where a stream starts.
pub enum Start {
    /// After this event id: the backlog is read from the store.
    After(i64),
    /// With the `run.queued` event of a run just created: there is no other
    /// backlog to read.
    Created(SequencedEvent),
}

/// The SSE response of a run's events. The caller has checked that the run
/// is the user's, and holds the stream's `slot` among the user's open
/// streams: it is given back when the stream ends.
pub fn stream(
    app: AppState,
    run_id: RunId,
    start: Start,
    slot: StreamSlot,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = ReceiverStream::new(follow(app, run_id, start, slot)).map(|event| {
        Ok(Event::default()
            .id(event.seq.to_string())
            .event(event.event.kind())
            .data(event.event.data().to_string()))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
}

/// A run's events in order, each once, up to and including the terminal
/// one: the backlog, then live. Every surface (the native stream and the
/// compatible ones) reads a run through this. The caller has checked that
/// the run is the user's; `slot` is held until the events end or the
/// receiver is dropped.
pub fn follow(
    app: AppState,
    run_id: RunId,
    start: Start,
    slot: StreamSlot,
) -> mpsc::Receiver<SequencedEvent> {
    let (tx, rx) = mpsc::channel(256);
    let tasks = app.tasks.clone();
    tasks.spawn(async move {
        let _slot = slot;
        let _open = OpenStream::count();
        let relay = Relay {
            app,
            run_id,
            last: 0,
            tx,
        };
        match relay.run(start).await {
            Ok(()) | Err(RelayEnd::ClientGone) => {}
            Err(error) => tracing::warn!(run.id = %run_id, %error, "event stream ended early"),
        }
    });
    rx
}

/// Counts an open stream in `switchyard_sse_streams_active` while it lives.
struct OpenStream;

impl OpenStream {
    fn count() -> Self {
        switchyard_common::metrics::METRICS.sse_streams.inc();
        Self
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        switchyard_common::metrics::METRICS.sse_streams.dec();
    }
}

/// Why a relay stopped before the terminal event.
#[derive(Debug, thiserror::Error)]
enum RelayEnd {
    #[error("the client went away")]
    ClientGone,
    #[error("the server is shutting down")]
    Shutdown,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// How sending events in a row ended.
enum Sent {
    /// With the terminal event.
    End,
    /// With the last of them.
    All,
    /// At one that does not follow the event before.
    Gap,
}

struct Relay {
    app: AppState,
    run_id: RunId,
    last: i64,
    tx: mpsc::Sender<SequencedEvent>,
}

impl Relay {
    async fn run(mut self, start: Start) -> Result<(), RelayEnd> {
        // Subscribe before reading the backlog: every event is then either in
        // what is read or among what arrives live (perhaps both).
        let mut live = self.app.tail.subscribe(self.run_id).await;
        let ended = match start {
            Start::After(after) => {
                self.last = after;
                self.catch_up().await?
            }
            // What the worker published before the subscription took effect
            // is in the stream already.
            Start::Created(queued) => self.send(&queued).await? || self.send_from_stream().await?,
        };
        if ended {
            return Ok(());
        }
        let mut quiet_for = FIRST_QUIET_CHECK;
        let mut database_checked = tokio::time::Instant::now();
        loop {
            let received = tokio::select! {
                event = live.recv() => event,
                () = tokio::time::sleep(quiet_for) => {
                    let ended = if database_checked.elapsed() >= DATABASE_CHECK {
                        database_checked = tokio::time::Instant::now();
                        Box::pin(self.catch_up()).await?
                    } else {
                        Box::pin(self.look_quietly()).await?
                    };
                    if ended {
                        return Ok(());
                    }
                    quiet_for = (quiet_for * 2).min(LAST_QUIET_CHECK);
                    continue;
                }
                () = self.tx.closed() => return Err(RelayEnd::ClientGone),
                () = self.app.shutdown.cancelled() => return Err(RelayEnd::Shutdown),
            };
            quiet_for = FIRST_QUIET_CHECK;
            match received {
                Some(event) if event.seq <= self.last => {}
                Some(event) => {
                    if event.seq > self.last + 1 && Box::pin(self.catch_up()).await? {
                        return Ok(());
                    }
                    if event.seq == self.last + 1 && self.send(&event).await? {
                        return Ok(());
                    }
                }
                None => {
                    // Cut loose (too slow, or the hub's connection dropped
                    // or came back) or the hub stopped: follow again, then
                    // read what was missed.
                    live = self.app.tail.subscribe(self.run_id).await;
                    if Box::pin(self.catch_up()).await? {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Send what the run's Redis stream holds after `last`, reading
    /// PostgreSQL only when the stream is missing, unreadable or does not
    /// continue where the client is. Returns whether the terminal event
    /// was sent.
    async fn look_quietly(&mut self) -> Result<bool, RelayEnd> {
        match self.app.tail.news_after(self.run_id, self.last).await {
            Ok(Some(news)) => match self.send_consecutive(news).await? {
                Sent::End => Ok(true),
                Sent::All => Ok(false),
                // Where the stream does not continue, PostgreSQL has it all.
                Sent::Gap => self.read_database().await,
            },
            _ => self.read_database().await,
        }
    }

    /// Send everything stored after `last`: from the Redis stream when it
    /// continues exactly where we are, else from PostgreSQL. Returns whether
    /// the terminal event was sent.
    async fn catch_up(&mut self) -> Result<bool, RelayEnd> {
        if self.send_from_stream().await? {
            return Ok(true);
        }
        self.read_database().await
    }

    /// Send what PostgreSQL stores after `last`. Returns whether the
    /// terminal event was sent, or the client has everything of a run that
    /// ended.
    async fn read_database(&mut self) -> Result<bool, RelayEnd> {
        // A run stores its terminal events with its terminal status. Read
        // the status first: if the run had already finished, the events read
        // next include its end, and reading nothing means the client has it
        // all. (Read the other way round, a run finishing in between would
        // look finished with its last events unsent.)
        let finished = db::runs::status(&self.app.pool, self.run_id)
            .await?
            .is_none_or(|status| status.is_terminal());
        loop {
            let page = db::events::list_after(&self.app.pool, self.run_id, self.last, PAGE).await?;
            let full = page.len() as i64 == PAGE;
            for event in page {
                if self.send(&event).await? {
                    return Ok(true);
                }
            }
            if !full {
                return Ok(finished);
            }
        }
    }

    /// Send what the run's Redis stream holds after `last`, if it continues
    /// exactly where we are. Returns whether the terminal event was sent.
    async fn send_from_stream(&mut self) -> Result<bool, RelayEnd> {
        let Ok(events) = self.app.tail.range_after(self.run_id, self.last).await else {
            return Ok(false);
        };
        Ok(matches!(self.send_consecutive(events).await?, Sent::End))
    }

    /// Send `events` (in order) while each is the one after `last`.
    async fn send_consecutive(&mut self, events: Vec<SequencedEvent>) -> Result<Sent, RelayEnd> {
        for event in events {
            if event.seq != self.last + 1 {
                return Ok(Sent::Gap);
            }
            if self.send(&event).await? {
                return Ok(Sent::End);
            }
        }
        Ok(Sent::All)
    }

    /// Send one event; returns whether it was the terminal one.
    async fn send(&mut self, event: &SequencedEvent) -> Result<bool, RelayEnd> {
        self.tx
            .send(event.clone())
            .await
            .map_err(|_| RelayEnd::ClientGone)?;
        self.last = event.seq;
        Ok(event.is_terminal())
    }
}
