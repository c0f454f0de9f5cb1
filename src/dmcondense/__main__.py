from dmcondense.train import main

main()
