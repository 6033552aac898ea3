//! Admin calls on a [`Client`]: `STATS`, `TOPICS`, `GROUPS`, `HEALTH`, `INFO`, `PING`,
//! `CREATE_TOPIC` and `DELETE_GROUP`, each answered with the typed document of
//! [`mq_protocol::admin`].
//!
//! Every admin request is safe to repeat (they read, creating a topic with the same
//! settings twice succeeds, and deleting a group twice leaves it deleted), so a call that
//! loses its connection reconnects and is sent once more.

use std::time::Duration;

use mq_protocol::admin::{GroupsReply, HealthReply, InfoReply, StatsReply, TopicsReply};
use mq_protocol::{CreateTopic, ErrorCode, Request, Response};

use crate::conn::{parse_json, unexpected};
use crate::error::{ClientError, Result};
use crate::Client;

/// Settings of a topic to create; zero in a field means the broker's default.
pub type TopicSettings = CreateTopic;

impl Client {
    /// Sends `request` and returns its reply, reconnecting and sending again once if the
    /// connection is lost on the way.
    ///
    /// # Errors
    /// [`ClientError::Broker`] for an `ERROR` reply, connection errors, or
    /// [`ClientError::InvalidRequest`] for a request that fails validation.
    pub fn call(&mut self, request: &Request) -> Result<Response> {
        match self.call_once(request) {
            Err(e) if e.is_connection_lost() => {
                self.link.lose(&e);
                self.link.reconnect()?;
                self.call_once(request)
            }
            other => other,
        }
    }

    fn call_once(&mut self, request: &Request) -> Result<Response> {
        let timeout = self.link.config.request_timeout;
        let conn = self.link.conn()?;
        let id = conn.send(request)?;
        conn.flush()?;
        let result = conn.reply_to(id, timeout);
        if let Err(e) = &result {
            if e.is_connection_lost() || matches!(e, ClientError::Protocol(_)) {
                self.link.lose(e);
            }
        }
        result
    }

    /// Round-trip time of a `PING`.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn ping(&mut self) -> Result<Duration> {
        let started = std::time::Instant::now();
        match self.call(&Request::Ping)? {
            Response::Pong => Ok(started.elapsed()),
            other => Err(unexpected("PING", &other)),
        }
    }

    /// The broker's identity and limits (read afresh).
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn info(&mut self) -> Result<InfoReply> {
        match self.call(&Request::Info)? {
            Response::Info(json) => parse_json("INFO", &json),
            other => Err(unexpected("INFO", &other)),
        }
    }

    /// Health: `ok`, `degraded` or `shutting_down`, uptime and connections.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn health(&mut self) -> Result<HealthReply> {
        match self.call(&Request::Health)? {
            Response::Health(json) => parse_json("HEALTH", &json),
            other => Err(unexpected("HEALTH", &other)),
        }
    }

    /// Counters per broker, topic, partition, group and member.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn stats(&mut self) -> Result<StatsReply> {
        match self.call(&Request::Stats)? {
            Response::Stats(json) => parse_json("STATS", &json),
            other => Err(unexpected("STATS", &other)),
        }
    }

    /// Every topic with its settings and record count.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn topics(&mut self) -> Result<TopicsReply> {
        match self.call(&Request::Topics)? {
            Response::Topics(json) => parse_json("TOPICS", &json),
            other => Err(unexpected("TOPICS", &other)),
        }
    }

    /// Every (group, topic) pair with members, lag and records in flight.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn groups(&mut self) -> Result<GroupsReply> {
        match self.call(&Request::Groups)? {
            Response::Groups(json) => parse_json("GROUPS", &json),
            other => Err(unexpected("GROUPS", &other)),
        }
    }

    /// Creates a topic. Succeeds also if it exists with the same settings.
    ///
    /// # Errors
    /// [`ClientError::Broker`] with `TOPIC_EXISTS` (other settings), `TOO_MANY_TOPICS` or
    /// `TOO_MANY_PARTITIONS`; as [`Client::call`].
    pub fn create_topic(&mut self, settings: &TopicSettings) -> Result<()> {
        match self.call(&Request::CreateTopic(settings.clone()))? {
            Response::Ok => Ok(()),
            other => Err(unexpected("CREATE_TOPIC", &other)),
        }
    }

    /// Deletes consumer group `group` of `topic`, with its committed offsets. Only a group
    /// without members can be deleted. If the connection is lost after the broker deleted
    /// the group, the resent request finds no group: that counts as done.
    ///
    /// # Errors
    /// [`ClientError::Broker`] with `NO_SUCH_GROUP` or `GROUP_ACTIVE` (it has members);
    /// [`ClientError::InvalidRequest`] for a bad name; as [`Client::call`].
    pub fn delete_group(&mut self, topic: &str, group: &str) -> Result<()> {
        let request = Request::DeleteGroup { topic: topic.into(), group: group.into() };
        match self.call_once(&request) {
            Err(e) if e.is_connection_lost() => {
                self.link.lose(&e);
                self.link.reconnect()?;
                match self.call_once(&request) {
                    Err(e) if e.code() == Some(ErrorCode::NO_SUCH_GROUP) => Ok(()),
                    other => other.and_then(expect_ok),
                }
            }
            other => other.and_then(expect_ok),
        }
    }
}

fn expect_ok(response: Response) -> Result<()> {
    match response {
        Response::Ok => Ok(()),
        other => Err(unexpected("DELETE_GROUP", &other)),
    }
}
