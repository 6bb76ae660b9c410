//! Noise schedules: training β schedules and the σ schedules samplers walk.
