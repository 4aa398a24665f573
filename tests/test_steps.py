"""The step contract (compiler/steps.py): roles, trainable parameters and each step's own
formula lines, which the formula, gradient and report modules read instead of switching on
layer types."""

import pytest

import ntk_infinite as nk
from ntk_infinite.compiler.steps import compile_step, is_trainable, role_of

LAYERS = [
    (nk.Dense(w_std=1.5, b_std=0.1), "affine", True),
    (nk.Conv(filter_shape=(3,), w_std=1.2, b_std=0.3), "affine", True),
    (nk.AvgPool(window_shape=(2,)), "linear", False),
    (nk.Flatten(), "readout", False),
    (nk.GlobalAvgPool(), "readout", False),
    (nk.ReLU(), "activation", False),
]


@pytest.mark.parametrize("layer, role, trainable", LAYERS, ids=[type(case[0]).__name__ for case in LAYERS])
def test_role_and_trainable_parameters(layer, role, trainable):
    assert role_of(layer) == role
    assert is_trainable(layer) is trainable
    step = compile_step(layer, 1e-10)
    assert step.role == role and step.trainable is trainable
    if trainable:
        assert (step.w_std, step.b_std) == (layer.w_std, layer.b_std)
        assert (step.w2, step.b2) == (layer.w_std ** 2, layer.b_std ** 2)


def test_identity_compiles_to_nothing():
    assert role_of(nk.Identity()) is None and compile_step(nk.Identity(), 1e-10) is None
    assert not is_trainable(nk.Identity())


def test_each_step_writes_its_own_lines():
    dense = compile_step(nk.Dense(w_std=1.5, b_std=0.1), 1e-10)
    assert dense.formula_text(2) == ("Sigma_2(x, x') = 2.25*Sigma_1(x, x') + 0.01",
                                     "Theta_2(x, x') = Sigma_2(x, x') + 2.25*Theta_1(x, x')")
    assert dense.formula_latex(2)[0] == "\\Sigma_{2}{\\left(x,x' \\right)} &= 2.25 \\Sigma_{1}{\\left(x,x' \\right)} + 0.01"
    relu = compile_step(nk.ReLU(), 1e-10)
    dense_line, spatial_line = relu.formula_text(3, spatial=False)[1], relu.formula_text(3, spatial=True)[1]
    assert dense_line.endswith("*Theta_2(x, x')/(2*pi)") and "Sigma_2(x, x)" in dense_line
    assert spatial_line.endswith("*Theta_2(x, x')[p, p']/(2*pi)") and "Sigma_2(x, x)[p, p]" in spatial_line
    pool = compile_step(nk.AvgPool(window_shape=(3,), strides=(2,), padding="SAME"), 1e-10)
    assert pool.formula_text(1)[0] == "Sigma_1(x, x')[p, p'] = 1/3^2 * sum_{o, o' in {0..2}} " \
                                      "Sigma_0(x, x')[s*p + o - p_lo, s*p' + o' - p_lo]"
    assert "strides s = (2,); SAME" in pool.formula_where() and "floor(max((out - 1)*s + w - n, 0)/2)" in pool.formula_where()
    assert compile_step(nk.Flatten(), 1e-10).formula_where() == "P = number of positions of the incoming state"
    assert dense.formula_where() == "" and relu.formula_where() == ""


def test_formula_command_line_for_a_conv_net(capsys):
    from ntk_infinite.cli import main

    assert main(["formula", "Conv(filter_shape=(2, 2), padding='SAME', w_std=1.5) > ReLU > GlobalAvgPool > Dense"]) == 0
    out = capsys.readouterr().out
    assert "Sigma_1(x, x')[p, p'] = 2.25/4 * sum_{o in {0..1}x{0..1}} Sigma_0(x, x')[s*p + o - p_lo, s*p' + o - p_lo]" in out
    assert "Sigma_3(x, x') = 1/P^2 * sum_{p, p'} Sigma_2(x, x')[p, p']" in out
