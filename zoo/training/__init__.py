"""Training: class weights, learning-rate schedules, the epoch monitor and the trainer."""
