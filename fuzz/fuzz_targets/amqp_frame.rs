#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| turnstile_fuzz::amqp_frame(data));
