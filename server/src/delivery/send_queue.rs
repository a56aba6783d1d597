//! A session's outbound queue: encoded frames waiting for the session's writer task.
//!
//! Bounded twice, by frames and by bytes, so one slow device can hold neither many tiny
//! pushes nor a few huge sync pages beyond the limits (a frame on its own always fits, so
//! a maximum-size frame can still be sent). Pushing never waits: a full queue is the
//! caller's signal to disconnect the slow consumer.
//!
//! It is a `VecDeque` under a mutex plus a `Notify` rather than a tokio channel because
//! most connections are idle: an empty queue owns no buffer (a drained one gives its
//! buffer back), where a bounded tokio channel keeps a 32-slot block and its ~0.5 KiB
//! channel state per connection for the whole life of the connection.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::Notify;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// Over the frame or byte limit: the consumer is too slow.
    Full,
    /// The writer is gone; the session is over.
    Closed,
}

pub struct SendQueue {
    state: Mutex<State>,
    ready: Notify,
    max_frames: usize,
    max_bytes: usize,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Bytes>,
    bytes: usize,
    closed: bool,
}

/// A drained queue keeps a buffer of at most this many slots.
const KEEP_SLOTS: usize = 4;

impl SendQueue {
    pub fn new(max_frames: usize, max_bytes: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            max_frames: max_frames.max(1),
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Nothing panics while holding the lock; if something did, the queue is still a
        // valid queue.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a frame without waiting.
    pub fn push(&self, frame: Bytes) -> Result<(), PushError> {
        let mut s = self.lock();
        if s.closed {
            return Err(PushError::Closed);
        }
        let over_bytes = !s.frames.is_empty() && s.bytes + frame.len() > self.max_bytes;
        if s.frames.len() >= self.max_frames || over_bytes {
            return Err(PushError::Full);
        }
        s.bytes += frame.len();
        s.frames.push_back(frame);
        drop(s);
        self.ready.notify_one();
        Ok(())
    }

    /// Takes the next frame if there is one.
    pub fn try_pop(&self) -> Option<Bytes> {
        let mut s = self.lock();
        let frame = s.frames.pop_front()?;
        s.bytes -= frame.len();
        if s.frames.is_empty() && s.frames.capacity() > KEEP_SLOTS {
            s.frames = VecDeque::new();
        }
        Some(frame)
    }

    /// Waits for the next frame. Only the writer task calls this (one waiter).
    pub async fn pop(&self) -> Bytes {
        loop {
            if let Some(frame) = self.try_pop() {
                return frame;
            }
            // `notify_one` leaves a permit when nobody waits, so a push between the
            // check above and this await is not missed.
            self.ready.notified().await;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.lock().frames.is_empty()
    }

    /// Refuses further pushes (the writer has ended); what is queued is dropped.
    pub fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        s.frames = VecDeque::new();
        s.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> Bytes {
        Bytes::from(vec![7u8; n])
    }

    #[test]
    fn frame_limit_then_byte_limit() {
        let q = SendQueue::new(3, 100);
        assert_eq!(q.push(frame(10)), Ok(()));
        assert_eq!(q.push(frame(10)), Ok(()));
        assert_eq!(q.push(frame(10)), Ok(()));
        assert_eq!(q.push(frame(1)), Err(PushError::Full), "4th frame");
        assert_eq!(q.try_pop().unwrap().len(), 10);
        assert_eq!(
            q.push(frame(81)),
            Err(PushError::Full),
            "20 + 81 > 100 bytes"
        );
        assert_eq!(q.push(frame(80)), Ok(()), "20 + 80 fits");
        // Order kept.
        let lens: Vec<usize> = std::iter::from_fn(|| q.try_pop())
            .map(|f| f.len())
            .collect();
        assert_eq!(lens, vec![10, 10, 80]);
    }

    #[test]
    fn one_frame_over_the_byte_limit_fits_into_an_empty_queue() {
        let q = SendQueue::new(8, 100);
        assert_eq!(q.push(frame(500)), Ok(()));
        assert_eq!(q.push(frame(1)), Err(PushError::Full));
        q.try_pop().unwrap();
        assert_eq!(q.push(frame(1)), Ok(()));
    }

    #[test]
    fn a_drained_queue_gives_its_buffer_back_and_a_closed_one_refuses() {
        let q = SendQueue::new(1000, 1 << 20);
        for _ in 0..100 {
            q.push(frame(1)).unwrap();
        }
        while q.try_pop().is_some() {}
        assert!(q.lock().frames.capacity() <= KEEP_SLOTS);
        assert_eq!(q.lock().bytes, 0);
        q.push(frame(3)).unwrap();
        q.close();
        assert_eq!(q.push(frame(1)), Err(PushError::Closed));
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn pop_wakes_on_a_push_from_another_task() {
        let q = std::sync::Arc::new(SendQueue::new(16, 1 << 20));
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.pop().await.len() });
        tokio::task::yield_now().await;
        q.push(frame(42)).unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("pop woke up")
            .unwrap();
        assert_eq!(got, 42);
    }
}
