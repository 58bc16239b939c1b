//! Conformance tests of concurrent use: snapshot-consistent reads during writes, and sharing one store across threads.

use std::sync::atomic::{AtomicBool, Ordering};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{create_subject, create_watchlist, new_template, random_embedding, stream, template_added};
use crate::gallery::store::GalleryStore;

pub(crate) fn concurrent_readers_see_consistent_snapshots_during_writes(store: &dyn GalleryStore) {
    create_watchlist(store, "wanted");
    let subject = create_subject(store, "wanted", "Jane Roe", None);
    let start = store.generation().expect("generation");
    let writes_done = AtomicBool::new(false);
    let total_writes = 60;
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut rng = ChaCha8Rng::seed_from_u64(15);
            for seed in 0..total_writes {
                store
                    .add_template(
                        new_template(subject.id, "m", random_embedding(&mut rng, 32), seed),
                        &template_added,
                    )
                    .expect("add while reading");
            }
            writes_done.store(true, Ordering::SeqCst);
        });
        let readers: Vec<_> = (0..3)
            .map(|_| {
                scope.spawn(|| {
                    let mut snapshots = 0;
                    loop {
                        let finished = writes_done.load(Ordering::SeqCst);
                        // Every add bumps the generation once and adds one template, so a consistent snapshot
                        // streams exactly as many templates as the generation moved.
                        let (generation, streamed) = stream(store, "m");
                        assert_eq!(
                            streamed.len() as u64,
                            generation - start,
                            "snapshot mixes two states"
                        );
                        assert!(
                            streamed.windows(2).all(|pair| pair[0].0 < pair[1].0),
                            "keys ascend"
                        );
                        let owners = store
                            .template_owners(&[1, 2, 3])
                            .expect("owners while writing");
                        assert!(owners.len() <= 3);
                        snapshots += 1;
                        if finished {
                            return snapshots;
                        }
                    }
                })
            })
            .collect();
        for reader in readers {
            assert!(reader.join().expect("reader thread") > 0);
        }
    });
    assert_eq!(
        store.count_templates("m").expect("count"),
        total_writes as usize
    );
}

pub(crate) fn store_is_shared_across_threads_as_a_trait_object(store: &dyn GalleryStore) {
    create_watchlist(store, "wanted");
    let names: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    store
                        .get_watchlist("wanted")
                        .expect("visible to every thread")
                        .name
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("thread"))
            .collect()
    });
    assert_eq!(names, vec!["wanted"; 4]);
}
