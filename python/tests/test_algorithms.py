"""FedProx and SCAFFOLD helpers against a direct computation (numpy and PyTorch)."""
import unittest

import numpy as np

import support  # noqa: F401  (puts python/ on sys.path, as the other test modules do)
from flotilla import FLModel
from flotilla.algorithms import DELTA_PREFIX, Scaffold, fedprox_mu


class FedProxTest(unittest.TestCase):
    def test_mu_from_meta(self):
        self.assertEqual(fedprox_mu({"fedprox_mu": 0.1}), 0.1)
        self.assertEqual(fedprox_mu({}, 0.5), 0.5)
        with self.assertRaises(ValueError):
            fedprox_mu({"fedprox_mu": -1})
        with self.assertRaises(ValueError):
            fedprox_mu({"fedprox_mu": "0.1"})

    def test_torch_term_and_gradient(self):
        import torch

        from flotilla.torch_algorithms import fedprox_term

        net = torch.nn.Linear(3, 2)
        anchor = {n: p.detach().clone() + 0.5 for n, p in net.named_parameters()}
        term = fedprox_term(net, anchor, 0.2)
        want = 0.2 / 2 * sum(float(((p - anchor[n]) ** 2).sum()) for n, p in net.named_parameters())
        self.assertAlmostEqual(float(term), want, places=5)
        term.backward()
        # d/dw mu/2 ||w - a||^2 = mu (w - a) = 0.2 * -0.5
        self.assertTrue(torch.allclose(net.weight.grad, torch.full_like(net.weight, -0.1)))
        self.assertEqual(float(fedprox_term(net, anchor, 0)), 0.0)


class ScaffoldTest(unittest.TestCase):
    def test_client_update_option_two(self):
        sc = Scaffold()
        sc.ci = {"w": np.array([0.3, 0, -0.1], dtype=np.float32)}
        c = {"w": np.array([0.1, -0.2, 0], dtype=np.float32)}
        model = FLModel(params={"w": np.array([1, 2, 3], dtype=np.float32), "scaffold.c.w": c["w"]}, meta={"scaffold": True})
        self.assertTrue(Scaffold.enabled(model))
        x, c2 = Scaffold.split(model)
        self.assertEqual(list(x), ["w"])
        np.testing.assert_allclose(sc.correction(c2)["w"], np.float32([0.1 - 0.3, -0.2, 0.1]), rtol=1e-6)
        y = {"w": np.array([0.5, 2.5, 3], dtype=np.float32)}
        out = sc.result(x, y, c2, steps=10, lr=0.05)
        want = np.float32([0.3 - 0.1 + 0.5 / 0.5, 0.2 - 0.5 / 0.5, -0.1])
        np.testing.assert_allclose(sc.ci["w"], want, rtol=1e-6)
        np.testing.assert_allclose(out[DELTA_PREFIX + "w"], want - np.float32([0.3, 0, -0.1]), rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(out["w"], y["w"])
        with self.assertRaises(ValueError):
            sc.result(x, y, c2, steps=0, lr=0.1)

    def test_torch_correction(self):
        import torch

        from flotilla.torch_algorithms import scaffold_correct

        net = torch.nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            net.weight.copy_(torch.tensor([[1.0, 2.0]]))
        scaffold_correct(net, {"weight": np.float32([[0.5, -1]])}, 0.1)
        self.assertTrue(torch.allclose(net.weight, torch.tensor([[0.95, 2.1]])))


if __name__ == "__main__":
    unittest.main()
