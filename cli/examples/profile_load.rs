fn main() {
    let registry = weft_nodes::builtin_registry();
    let mut text = String::from("(nodes: {\n\"n0\": IntConstant(value: 0),\n");
    for i in 1..9999 {
        text.push_str(&format!("\"n{i}\": IntMath(a: Link(\"n{}\", \"value\"), b: 1),\n", i - 1));
    }
    text.push_str("\"out\": Print(value: Link(\"n9998\", \"value\")),\n})");
    for _ in 0..20 {
        let t = std::time::Instant::now();
        let doc = weft_core::GraphDoc::parse(weft_core::SourceFile::new("x", text.clone())).unwrap();
        let t1 = t.elapsed();
        let g = weft_core::validate(doc.clone(), &registry).unwrap();
        let t2 = t.elapsed();
        let ex = weft_core::Executor::new(1<<30);
        let opts = weft_core::RunOptions { workers: 1, ..Default::default() };
        ex.run(&g, &opts, &weft_core::EventSink::discard(), &weft_core::CancelToken::new()).unwrap();
        let t3 = std::time::Instant::now();
        ex.run(&g, &opts, &weft_core::EventSink::discard(), &weft_core::CancelToken::new()).unwrap();
        let t4 = t3.elapsed();
        let t5 = std::time::Instant::now();
        drop(g); drop(doc); drop(ex);
        eprintln!("parse {:?} validate {:?} cached {:?} drop {:?}", t1, t2 - t1, t4, t5.elapsed());
    }
}
