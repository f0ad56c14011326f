//! A panic inside the wasm module must not pass silently: after the trap, `take_trap`
//! names the client whose call never returned, with the panic's message when the build
//! keeps std's panic machinery (this test build does; the package traps without one). The
//! JS wrapper turns that into a typed `internal` error and restarts the client from its
//! cursor, and the module keeps working for new clients after the trap. The trapped
//! client's sockets, timers and listeners are released when the trap is taken.
//!
//! Run like `browser_adapters` (see there), with `--test browser_panic`.
#![cfg(target_arch = "wasm32")]

mod browser_common;

use browser_common::*;
use holdfast::bindings::{live_adapters_js, panic_for_test, take_trap, WasmClient};
use js_sys::{Array, Function, Object, Reflect};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn client(topic: &str, seen: Rc<RefCell<u32>>) -> (WasmClient, Closure<dyn FnMut(Array)>) {
    let o = Object::new();
    Reflect::set(&o, &"url".into(), &format!("{}/realtime", server()).into()).unwrap();
    Reflect::set(&o, &"topic".into(), &topic.into()).unwrap();
    Reflect::set(&o, &"remember".into(), &false.into()).unwrap();
    let emit = Closure::<dyn FnMut(Array)>::new(move |batch: Array| {
        for ev in batch.iter() {
            let ev: Array = ev.unchecked_into();
            if ev.get(0).as_string().as_deref() == Some("message") {
                *seen.borrow_mut() += 1;
            }
        }
    });
    let c = WasmClient::new(
        42,
        o.into(),
        emit.as_ref().unchecked_ref::<Function>().clone(),
    )
    .unwrap();
    (c, emit)
}

#[wasm_bindgen_test]
async fn a_panic_is_reported_with_its_client_and_the_module_keeps_working() {
    // Creating a client installs the hook that keeps a panic's message.
    let (first, _first_emit) = client(&fresh_topic("before-panic"), Rc::default());
    assert!(take_trap().is_undefined(), "nothing trapped yet");

    // The panic traps; JS sees a RuntimeError it can catch.
    let trigger = Closure::<dyn Fn()>::new(|| panic_for_test(42));
    let caller = Function::new_with_args(
        "f",
        "try { f(); return 'returned' } catch (e) { return e.constructor.name }",
    );
    let outcome = caller
        .call1(&JsValue::NULL, trigger.as_ref())
        .unwrap()
        .as_string()
        .unwrap();
    assert_eq!(outcome, "RuntimeError", "a panic traps");
    let trap: Array = take_trap().unchecked_into();
    assert_eq!(trap.get(0).as_f64(), Some(42.0), "it names the client");
    let message = trap.get(1).as_string().unwrap();
    assert!(
        message.starts_with("deliberate test panic at src/bindings/mod.rs:"),
        "{message}"
    );
    assert!(take_trap().is_undefined(), "a trap is reported once");
    drop(first);

    // A client created after the trap connects and receives events.
    let topic = fresh_topic("after-panic");
    let seen = Rc::new(RefCell::new(0));
    let (c, _emit) = client(&topic, seen.clone());
    c.start();
    for _ in 0..500 {
        if Reflect::get(&c.snapshot(), &"status".into())
            .unwrap()
            .as_string()
            .as_deref()
            == Some("open")
        {
            break;
        }
        sleep(20).await;
    }
    publish(&topic, 3).await;
    for _ in 0..500 {
        if *seen.borrow() >= 3 {
            break;
        }
        sleep(20).await;
    }
    assert_eq!(*seen.borrow(), 3, "the module still works after a panic");
    c.close();
    assert!(
        take_trap().is_undefined(),
        "calls that returned leave no trap behind"
    );
}

async fn wait_open(c: &WasmClient) {
    for _ in 0..500 {
        let status = Reflect::get(&c.snapshot(), &"status".into()).unwrap();
        if status.as_string().as_deref() == Some("open") {
            return;
        }
        sleep(20).await;
    }
    panic!("the client did not open");
}

#[wasm_bindgen_test]
async fn a_client_that_trapped_leaves_no_socket_timer_or_listener_behind() {
    let before = live_adapters_js();
    let topic = fresh_topic("trap-release");
    let (c, _emit) = client(&topic, Rc::default());
    let c = Rc::new(c);
    c.start();
    wait_open(&c).await;
    let held = live_adapters_js();
    assert!(
        held > before,
        "an open client holds a socket, a timer and page listeners"
    );

    // A panic inside one of the client's own calls: its state stays borrowed by the dead
    // call, so neither its callbacks nor close() can reach the socket any more.
    let inside = c.clone();
    let trigger = Closure::<dyn Fn()>::new(move || inside.panic_in_call_for_test());
    let caller = Function::new_with_args(
        "f",
        "try { f(); return 'returned' } catch (e) { return e.constructor.name }",
    );
    let outcome = caller.call1(&JsValue::NULL, trigger.as_ref()).unwrap();
    assert_eq!(outcome.as_string().as_deref(), Some("RuntimeError"));
    assert_eq!(live_adapters_js(), held, "the trap itself released nothing");

    let trap: Array = take_trap().unchecked_into();
    assert_eq!(trap.get(0).as_f64(), Some(42.0), "it names the client");
    assert_eq!(
        live_adapters_js(),
        before,
        "taking the trap released the client's socket, timer and listeners"
    );
    assert!(take_trap().is_undefined(), "a trap is reported once");
}
