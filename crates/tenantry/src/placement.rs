//! Which database server a new tenant goes to, when several are configured.

use serde::{Deserialize, Serialize};

/// One server of `[[placement.servers]]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Server {
    /// The name tenants are recorded with; stable across restarts.
    pub name: String,
    /// PostgreSQL URL of the owner role (database created if missing).
    pub url: String,
    /// Relative capacity: a server of weight 2 takes twice the tenants.
    #[serde(default = "one")]
    pub weight: f64,
}

fn one() -> f64 {
    1.0
}

/// The least-loaded server: the fewest live tenants per unit of weight
/// (ties go to the first listed). `counts` are live tenants per placement.
pub fn least_loaded<'a>(
    servers: &'a [Server],
    counts: &[(Option<String>, u64)],
) -> Option<&'a Server> {
    let load = |s: &Server| {
        let n = counts
            .iter()
            .find(|(name, _)| name.as_deref() == Some(s.name.as_str()))
            .map_or(0, |(_, n)| *n);
        n as f64 / s.weight.max(f64::MIN_POSITIVE)
    };
    servers
        .iter()
        .fold(None::<(&Server, f64)>, |best, s| {
            let l = load(s);
            match best {
                Some((_, b)) if b <= l => best,
                _ => Some((s, l)),
            }
        })
        .map(|(s, _)| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str, weight: f64) -> Server {
        Server {
            name: name.into(),
            url: format!("postgres://{name}"),
            weight,
        }
    }

    #[test]
    fn fills_servers_in_proportion_to_their_weights() {
        let servers = [server("a", 1.0), server("b", 1.0), server("c", 2.0)];
        let mut counts: Vec<(Option<String>, u64)> = Vec::new();
        for _ in 0..8 {
            let chosen = least_loaded(&servers, &counts)
                .expect("a server")
                .name
                .clone();
            match counts
                .iter_mut()
                .find(|(n, _)| n.as_deref() == Some(chosen.as_str()))
            {
                Some((_, n)) => *n += 1,
                None => counts.push((Some(chosen), 1)),
            }
        }
        let count = |name: &str| {
            counts
                .iter()
                .find(|(n, _)| n.as_deref() == Some(name))
                .map_or(0, |(_, n)| *n)
        };
        assert_eq!((count("a"), count("b"), count("c")), (2, 2, 4));
    }

    #[test]
    fn tenants_elsewhere_do_not_count_and_no_servers_means_no_placement() {
        let servers = [server("a", 1.0), server("b", 1.0)];
        let counts = vec![
            (None, 50),
            (Some("a".to_owned()), 3),
            (Some("b".to_owned()), 1),
        ];
        assert_eq!(
            least_loaded(&servers, &counts).map(|s| s.name.as_str()),
            Some("b")
        );
        assert_eq!(least_loaded(&[], &counts), None);
    }
}
