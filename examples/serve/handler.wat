(module
  ;; Page 0: the stack region of a compiled module (unused here). Page 1:
  ;; the request's input (at 0x10000) and output (at 0x11000). Pages 2-5:
  ;; 256 KiB of data (read-only strings, tables, statics), put in by
  ;; `backend.rs` where the marker line is: the first word of every 4 KiB
  ;; page k of it is `$expected(k)`, every eighth page is all zero. Past
  ;; the minimum: what `run` grows.
  (memory (export "memory") 6 16)
  ;; @data
  ;; Bits set that a fresh instance would not have: in the input and
  ;; output area, in the first word of every data page (compared with the
  ;; image), in the first word of every grown page. A fresh memory (its
  ;; image and zeroes) has none. `check` and `run` add what they find.
  (global $seen (export "seen") (mut i32) (i32.const 0))
  (func $expected (param $k i32) (result i64)
    (select (i64.const 0)
      (i64.mul (i64.extend_i32_u (i32.add (local.get $k) (i32.const 1)))
               (i64.const 0x9E3779B97F4A7C15))
      (i32.eq (i32.and (local.get $k) (i32.const 7)) (i32.const 7))))
  (func (export "check")
    (local $i i32) (local $n i32) (local $end i32) (local $k i32)
    (local.set $i (i32.const 0x10000))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (i32.const 0x12000)))
      (local.set $n (i32.add (local.get $n)
        (i32.wrap_i64 (i64.popcnt (i64.load (local.get $i))))))
      (local.set $i (i32.add (local.get $i) (i32.const 8)))
      (br $next)))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $k) (i32.const 64)))
      (local.set $n (i32.add (local.get $n)
        (i32.wrap_i64 (i64.popcnt (i64.xor
          (i64.load offset=0x20000 (i32.mul (local.get $k) (i32.const 0x1000)))
          (call $expected (local.get $k)))))))
      (local.set $k (i32.add (local.get $k) (i32.const 1)))
      (br $next)))
    (local.set $i (i32.const 0x60000))
    (local.set $end (i32.mul (memory.size) (i32.const 0x10000)))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
      (local.set $n (i32.add (local.get $n)
        (i32.wrap_i64 (i64.popcnt (i64.load (local.get $i))))))
      (local.set $i (i32.add (local.get $i) (i32.const 0x10000)))
      (br $next)))
    (global.set $seen (i32.add (global.get $seen) (local.get $n))))
  ;; Upper-cases the `len` input bytes into the output, writes a tenant's
  ;; mark over four data pages (a program's statics change), tries to grow
  ;; the memory by `grow` pages and writes the mark at the start of every
  ;; new page (after checking it is zero). Returns memory.grow's result
  ;; (-1: refused).
  (func (export "run") (param $len i32) (param $grow i32) (result i32)
    (local $i i32) (local $b i32) (local $old i32) (local $p i32)
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
      (local.set $b (i32.load8_u offset=0x10000 (local.get $i)))
      (if (i32.and (i32.ge_u (local.get $b) (i32.const 97))
                   (i32.le_u (local.get $b) (i32.const 122)))
        (then (local.set $b (i32.sub (local.get $b) (i32.const 32)))))
      (i32.store8 offset=0x11000 (local.get $i) (local.get $b))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (local.set $p (i32.const 0x20000))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $p) (i32.const 0x60000)))
      (i64.store (local.get $p) (i64.const 0xa5a5a5a5a5a5a5a5))
      (local.set $p (i32.add (local.get $p) (i32.const 0x10000)))
      (br $next)))
    (local.set $old (memory.grow (local.get $grow)))
    (if (i32.ne (local.get $old) (i32.const -1))
      (then
        (local.set $p (local.get $old))
        (block $done (loop $next
          (br_if $done (i32.ge_u (local.get $p) (memory.size)))
          (global.set $seen (i32.add (global.get $seen) (i32.wrap_i64
            (i64.popcnt (i64.load (i32.mul (local.get $p) (i32.const 0x10000)))))))
          (i64.store (i32.mul (local.get $p) (i32.const 0x10000))
            (i64.const 0xa5a5a5a5a5a5a5a5))
          (local.set $p (i32.add (local.get $p) (i32.const 1)))
          (br $next)))))
    (local.get $old))
)
