//! File module names → network weights, over synthetic weight-name sets.

use candle_core::{DType, Device, Tensor};

use super::unets::{refiner, sd15, sdxl, UnetShape};
use crate::lora::names::KeyTable;
use crate::lora::{Target, Weights};

/// Weights with these names (the table reads only names).
fn weights(names: impl IntoIterator<Item = String>) -> Weights {
    let t = Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap();
    names.into_iter().map(|n| (n, t.clone())).collect()
}

fn unet(shape: &UnetShape) -> Weights {
    weights(shape.names())
}

/// A CLIP text tower's linear layers (and its projection).
fn clip(layers: usize) -> Weights {
    let mut names = vec!["text_projection.weight".to_string()];
    for l in 0..layers {
        for m in [
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.out_proj",
            "mlp.fc1",
            "mlp.fc2",
        ] {
            names.push(format!("text_model.encoder.layers.{l}.{m}.weight"));
            names.push(format!("text_model.encoder.layers.{l}.{m}.bias"));
        }
    }
    weights(names)
}

fn check(table: &KeyTable, cases: &[(&str, Option<(Target, &str)>)]) {
    for (module, want) in cases {
        assert_eq!(table.get(module), *want, "{module}");
    }
}

#[test]
fn sd15_kohya_and_diffusers_spellings() {
    let (u, te) = (unet(&sd15()), clip(12));
    let table = KeyTable::new(&[(Target::Unet, &u), (Target::Clip(0), &te)], 2);
    let unet = |s| Some((Target::Unet, s));
    let q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q";
    let out = "up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_out.0";
    check(
        &table,
        &[
            (
                "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
                unet(q),
            ),
            (
                "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn2_to_out_0",
                unet(out),
            ),
            (
                "lora_unet_mid_block_attentions_0_proj_in",
                unet("mid_block.attentions.0.proj_in"),
            ),
            (
                "lora_unet_down_blocks_1_resnets_0_conv1",
                unet("down_blocks.1.resnets.0.conv1"),
            ),
            // The same weights by their LDM names (kohya SGM, ComfyUI).
            (
                "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q",
                unet(q),
            ),
            (
                "lora_unet_output_blocks_2_1_conv",
                unet("up_blocks.0.upsamplers.0.conv"),
            ),
            (
                "diffusion_model.output_blocks.11.1.transformer_blocks.0.attn2.to_out.0",
                unet(out),
            ),
            // PEFT and older diffusers.
            (&format!("unet.{q}"), unet(q)),
            (q, unet(q)),
            (&format!("unet.{out}"), unet(out)),
            (
                "unet.up_blocks.3.attentions.2.transformer_blocks.0.attn2.processor.to_out",
                unet(out),
            ),
            (
                "down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q",
                unet(q),
            ),
            // Text encoder.
            (
                "lora_te_text_model_encoder_layers_11_mlp_fc2",
                Some((Target::Clip(0), "text_model.encoder.layers.11.mlp.fc2")),
            ),
            (
                "text_encoder.text_model.encoder.layers.0.self_attn.q_proj",
                Some((
                    Target::Clip(0),
                    "text_model.encoder.layers.0.self_attn.q_proj",
                )),
            ),
            // transformers 5 writes the tower's keys without `text_model.`.
            (
                "text_encoder.encoder.layers.0.self_attn.k_proj",
                Some((
                    Target::Clip(0),
                    "text_model.encoder.layers.0.self_attn.k_proj",
                )),
            ),
            (
                "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_x",
                None,
            ),
            ("lora_te_text_model_encoder_layers_12_mlp_fc2", None),
            ("lora_te2_text_model_encoder_layers_0_mlp_fc2", None),
        ],
    );
}

#[test]
fn sdxl_sgm_spellings_and_two_text_encoders() {
    let (u, l, g) = (unet(&sdxl()), clip(12), clip(32));
    let networks = [
        (Target::Unet, &u),
        (Target::Clip(0), &l),
        (Target::Clip(1), &g),
    ];
    let table = KeyTable::new(&networks, 2);
    let unet = |s| Some((Target::Unet, s));
    check(
        &table,
        &[
            (
                "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q",
                unet("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"),
            ),
            (
                "lora_unet_input_blocks_8_1_transformer_blocks_9_attn2_to_k",
                unet("down_blocks.2.attentions.1.transformer_blocks.9.attn2.to_k"),
            ),
            (
                "lora_unet_middle_block_1_transformer_blocks_9_ff_net_2",
                unet("mid_block.attentions.0.transformer_blocks.9.ff.net.2"),
            ),
            (
                "lora_unet_middle_block_2_in_layers_2",
                unet("mid_block.resnets.1.conv1"),
            ),
            (
                "lora_unet_output_blocks_2_2_conv",
                unet("up_blocks.0.upsamplers.0.conv"),
            ),
            (
                "lora_unet_output_blocks_5_2_conv",
                unet("up_blocks.1.upsamplers.0.conv"),
            ),
            (
                "lora_unet_output_blocks_8_0_skip_connection",
                unet("up_blocks.2.resnets.2.conv_shortcut"),
            ),
            (
                "lora_unet_input_blocks_3_0_op",
                unet("down_blocks.0.downsamplers.0.conv"),
            ),
            ("lora_unet_label_emb_0_0", unet("add_embedding.linear_1")),
            ("lora_unet_time_embed_2", unet("time_embedding.linear_2")),
            ("lora_unet_input_blocks_0_0", unet("conv_in")),
            ("lora_unet_out_2", unet("conv_out")),
            (
                "lora_unet_add_embedding_linear_1",
                unet("add_embedding.linear_1"),
            ),
            (
                "lora_te1_text_model_encoder_layers_11_self_attn_out_proj",
                Some((
                    Target::Clip(0),
                    "text_model.encoder.layers.11.self_attn.out_proj",
                )),
            ),
            (
                "lora_te2_text_model_encoder_layers_31_mlp_fc1",
                Some((Target::Clip(1), "text_model.encoder.layers.31.mlp.fc1")),
            ),
            (
                "lora_te2_text_projection",
                Some((Target::Clip(1), "text_projection")),
            ),
            (
                "text_encoder_2.text_model.encoder.layers.20.self_attn.v_proj",
                Some((
                    Target::Clip(1),
                    "text_model.encoder.layers.20.self_attn.v_proj",
                )),
            ),
            (
                "text_encoder_2.encoder.layers.20.self_attn.v_proj",
                Some((
                    Target::Clip(1),
                    "text_model.encoder.layers.20.self_attn.v_proj",
                )),
            ),
            ("lora_te1_text_model_encoder_layers_12_mlp_fc1", None),
            ("lora_unet_input_blocks_9_0_op", None),
            ("lora_unet_output_blocks_8_2_conv", None),
        ],
    );
}

#[test]
fn refiner_sgm_spellings() {
    let u = unet(&refiner());
    let table = KeyTable::new(&[(Target::Unet, &u)], 2);
    let unet = |s| Some((Target::Unet, s));
    check(
        &table,
        &[
            (
                "lora_unet_input_blocks_4_1_transformer_blocks_3_attn2_to_k",
                unet("down_blocks.1.attentions.0.transformer_blocks.3.attn2.to_k"),
            ),
            (
                "lora_unet_output_blocks_2_1_conv",
                unet("up_blocks.0.upsamplers.0.conv"),
            ),
            (
                "lora_unet_output_blocks_5_2_conv",
                unet("up_blocks.1.upsamplers.0.conv"),
            ),
            (
                "lora_unet_input_blocks_10_0_in_layers_0",
                unet("down_blocks.3.resnets.0.norm1"),
            ),
            ("lora_unet_input_blocks_1_1_proj_in", None),
        ],
    );
}
