from lrlab.run import main

main()
