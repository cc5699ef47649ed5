/* toy_gaussian: the baseline every flow must beat — a Gaussian fitted by maximum likelihood to
 * 20,000 samples of each toy set, scored on held-out points drawn as cnf train draws them
 * (--test-n 5000 with the seed's test stream).
 *
 *   build/examples/toy_gaussian [SEED]          prints one line per toy set: name and test NLL
 *
 * NLL of N(μ, Σ) at x: ½ (x−μ)ᵀΣ⁻¹(x−μ) + ½ log det(2πΣ), in nats. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <cnf.h>

int main(int argc, char **argv)
{
    unsigned long long seed = argc > 1 ? strtoull(argv[1], NULL, 10) : 0;
    enum { NFIT = 20000, NTEST = 5000 };
    static double X[NFIT * 2], T[NTEST * 2];
    for (size_t k = 0; k < cnf_toy_count(); k++) {
        const cnf_toy_type *ty = cnf_toy_at(k);
        cnf_rng r;
        cnf_rng_seed(&r, seed + 1000);
        cnf_toy_sample(ty, NFIT, X, &r);
        cnf_rng_seed(&r, seed ^ 0x7e57da7aULL); /* cnf train's held-out stream */
        cnf_toy_sample(ty, NTEST, T, &r);
        double m[2] = {0}, S[3] = {0};
        for (size_t i = 0; i < NFIT; i++)
            for (int j = 0; j < 2; j++)
                m[j] += X[2 * i + j] / NFIT;
        for (size_t i = 0; i < NFIT; i++) {
            double a = X[2 * i] - m[0], b = X[2 * i + 1] - m[1];
            S[0] += a * a / NFIT, S[1] += a * b / NFIT, S[2] += b * b / NFIT;
        }
        double det = S[0] * S[2] - S[1] * S[1], nll = 0;
        for (size_t i = 0; i < NTEST; i++) {
            double a = T[2 * i] - m[0], b = T[2 * i + 1] - m[1];
            double q = (S[2] * a * a - 2 * S[1] * a * b + S[0] * b * b) / det;
            nll += 0.5 * q + 0.5 * log(4 * M_PI * M_PI * det);
        }
        printf("%s %.4f\n", cnf_toy_name(ty), nll / NTEST);
    }
    return 0;
}
