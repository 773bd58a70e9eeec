//! Following `ForwardToLeader` is bounded: a chain of nodes each pointing at another is
//! followed at most `MAX_FORWARD_HOPS` times, then the request fails with a typed error
//! instead of wandering (a cluster whose nodes disagree about the leader).
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use kv_meta::{
    BoxFuture, JoinRequest, MAX_FORWARD_HOPS, MetaError, MetaPeer, MetaRaft, MetaReply,
    MetaRequest, MetaTransport, TransportError,
};

/// Every node it reaches says the leader is the next one: n1 → n2 → n3 → ...
#[derive(Default)]
struct EndlessChain {
    asked: Mutex<Vec<String>>,
}

impl MetaTransport for EndlessChain {
    fn call(
        &self,
        to: &MetaPeer,
        body: Bytes,
        _: Duration,
    ) -> BoxFuture<Result<Bytes, TransportError>> {
        self.asked.lock().unwrap().push(to.id.clone());
        assert!(matches!(
            MetaRequest::decode(&body),
            Ok(MetaRequest::Join { .. })
        ));
        let next = to.raft_id + 1;
        let reply = MetaReply::Error(MetaError::ForwardToLeader {
            leader: Some(MetaPeer {
                raft_id: next,
                id: format!("n{next}"),
                cluster_addr: format!("127.0.0.1:{}", 7000 + next),
            }),
        });
        Box::pin(async move { Ok(reply.encode().unwrap()) })
    }
}

#[tokio::test]
async fn a_join_follows_at_most_three_hops() {
    let chain = EndlessChain::default();
    let seed = MetaPeer {
        raft_id: 1,
        id: "n1".into(),
        cluster_addr: "127.0.0.1:7001".into(),
    };
    let joiner = JoinRequest {
        id: "n9".into(),
        cluster_addr: "127.0.0.1:7009".into(),
        client_addr: "127.0.0.1:6309".into(),
        cluster_name: "test".into(),
    };
    let err = MetaRaft::join(&chain, &seed, &joiner).await.unwrap_err();
    match err {
        MetaError::Unavailable { reason } => {
            assert!(reason.contains("forwarded 3 times"), "{reason}")
        }
        e => panic!("{e:?}"),
    }
    // The seed, then three hops.
    assert_eq!(*chain.asked.lock().unwrap(), ["n1", "n2", "n3", "n4"]);
    assert_eq!(MAX_FORWARD_HOPS, 3);
}
