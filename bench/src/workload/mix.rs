//! One schedule of three acts: moving hotspot for the first third, follow-the-sun for the
//! second, a flash crowd in the last. Each act is the stand-alone generator run for a third of
//! the time (with its own seed derived from the mix's), shifted to its slot.

use super::flash::Flash;
use super::hotspot::Hotspot;
use super::rng::splitmix64;
use super::sun::Sun;
use super::{ordered_preload, secs_to_us, Params, Phase, Request, Workload};

pub(crate) struct Mix {
    params: Params,
    acts: Vec<(u64, Box<dyn Workload>)>,
    current: usize,
    last_us: u64,
}

impl Mix {
    pub(crate) fn new(params: &Params) -> Mix {
        let third = params.seconds / 3.0;
        let mut seed_state = params.seed;
        let mut act_params = || Params {
            seed: splitmix64(&mut seed_state),
            seconds: third,
            ..params.clone()
        };
        let acts: Vec<(u64, Box<dyn Workload>)> = vec![
            (0, Box::new(Hotspot::new(&act_params()))),
            (secs_to_us(third), Box::new(Sun::new(&act_params()))),
            (secs_to_us(2.0 * third), Box::new(Flash::new(&act_params()))),
        ];
        Mix {
            params: params.clone(),
            acts,
            current: 0,
            last_us: 0,
        }
    }
}

impl Workload for Mix {
    fn name(&self) -> &str {
        "mix"
    }

    fn preload(&self) -> Box<dyn Iterator<Item = (Vec<u8>, u32)> + Send + '_> {
        ordered_preload(self.params.records, self.params.value_len)
    }

    fn next_request(&mut self) -> Option<Request> {
        while let Some((offset, act)) = self.acts.get_mut(self.current) {
            if let Some(mut request) = act.next_request() {
                // Rounding of the slot offsets must not let time step back at a seam.
                request.at_us = (request.at_us + *offset).max(self.last_us);
                self.last_us = request.at_us;
                return Some(request);
            }
            self.current += 1;
        }
        None
    }

    fn phases(&self) -> Vec<Phase> {
        self.acts
            .iter()
            .flat_map(|(offset, act)| {
                act.phases().into_iter().map(move |mut phase| {
                    phase.from_us += offset;
                    phase.to_us += offset;
                    phase
                })
            })
            .collect()
    }
}
